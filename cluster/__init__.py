"""Dask cluster set-up (LocalCUDACluster, LocalCluster or an existing scheduler) and worker tasks."""

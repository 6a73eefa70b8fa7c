"""The process and its machine: device and seeds, CPU threads and settings, memory settings
(no torch: applied before it loads), distributed processes, signals."""

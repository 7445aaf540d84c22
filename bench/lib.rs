//! Benchmarks of comms-archiver live in `benches/` (criterion) and `run.sh` (end to end).

//! Integration tests: the binary on the embedded default, and the pipeline under failure.

mod cli;
mod partners;
mod recovery;
mod scheduler;
mod support;

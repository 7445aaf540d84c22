//! Integration tests: the binary on the embedded default, and the pipeline under failure.

mod alerts;
mod azure;
mod azurite;
mod chaos;
mod cli;
mod destinations;
mod disk_full;
mod dovecot;
mod evidence;
mod first_use;
mod graph;
mod graph_fake;
mod hostile;
mod imap;
mod kubernetes;
mod overlap;
mod partners;
mod recovery;
mod redrive;
mod scheduler;
mod secrets;
mod service;
mod sftp;
mod sizes;
mod smtp;
mod support;

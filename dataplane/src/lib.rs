//! `dataplane`: a thread-per-core egress proxy for Istio ServiceEntries.
//!
//! This crate holds the runtime side: reading configuration files, the command-line tools and
//! (as it is built) the workers, detection, forwarding and admin. Everything about what the
//! configuration means lives in `dataplane-config`.
#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod capture;
pub mod cli;
pub mod coarse_timer;
pub mod config_files;
pub mod conn;
pub mod control;
pub mod detect;
pub mod dns;
pub mod drain;
pub mod forward;
pub mod http;
pub mod idle_yield;
pub mod metrics;
pub mod origination;
pub mod run;
pub mod runtime;
pub mod snapshot;
pub mod sys;
pub mod upstream;
pub mod worker_sched;

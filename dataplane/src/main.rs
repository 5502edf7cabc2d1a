//! The `dataplane` binary: parses the command line and dispatches.

use std::process::ExitCode;

use clap::Parser;
use dataplane::cli::{Cli, Command};

/// mimalloc: per-thread heaps suit thread-per-core workers, and the HTTP path allocates per
/// request (glibc malloc was 17% of the proxy's CPU in the keep-alive benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Named so the linker keeps it: it tunes mimalloc before the first allocation.
    std::hint::black_box(&dataplane::sys::TUNE_ALLOCATOR);
    let cli = Cli::parse();
    match &cli.command {
        Command::Validate(args) => dataplane::cli::validate(args),
        Command::Routes(args) => dataplane::cli::routes(args),
        Command::Run(args) => dataplane::run::run(args),
        Command::Capture(args) => dataplane::capture::capture(args),
    }
}

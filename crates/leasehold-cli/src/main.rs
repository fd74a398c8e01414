//! `leasehold`: the sidecar (`leasehold serve`) and, later, the
//! command-line client. Thin: flags, logging and exit codes; the work is in
//! the library crates.

use std::process::ExitCode;

use clap::Parser;

mod serve;

/// Exit codes, in the spirit of sysexits: 64 is a usage or configuration
/// error found before anything started.
pub(crate) mod exit {
    /// A configuration problem (flags, component files).
    pub(crate) const USAGE: u8 = 64;
    /// Anything else that stopped the command.
    pub(crate) const ERROR: u8 = 1;
}

#[derive(Debug, Parser)]
#[command(
    name = "leasehold",
    version,
    about = "A distributed lock service that speaks the Dapr lock API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the sidecar: Dapr's lock API over HTTP and gRPC.
    Serve(Box<serve::ServeArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
    }
}

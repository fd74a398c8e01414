//! `leasehold`: the sidecar (`leasehold serve`) and the command-line
//! client (`lock`, `unlock`, `status`, `list`, `force-unlock`, `run`). Thin: flags, logging and exit codes; the work is in
//! the library crates.

use std::process::ExitCode;

use clap::Parser;

mod client;
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
    /// Take a lock once (no renewal) and print its owner and fencing token.
    Lock(client::LockArgs),
    /// Release a lock held by an owner.
    Unlock(client::UnlockArgs),
    /// Show who holds a lock (advisory).
    Status(client::StatusArgs),
    /// List held locks (needs LEASEHOLD_ADMIN_TOKEN).
    List(client::ListArgs),
    /// Break a lock whoever holds it (needs LEASEHOLD_ADMIN_TOKEN).
    ForceUnlock(client::ForceUnlockArgs),
    /// Hold a lock, permits of a semaphore, or an election's leadership
    /// while a command runs; stop the command if it is lost.
    Run(client::RunArgs),
    /// Show who leads an election (advisory).
    Leader(client::ElectionArgs),
    /// Print every change of an election's leader, value or term.
    Observe(client::ElectionArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Lock(args) => client::lock(args),
        Command::Unlock(args) => client::unlock(args),
        Command::Status(args) => client::status(args),
        Command::List(args) => client::list(args),
        Command::ForceUnlock(args) => client::force_unlock(args),
        Command::Run(args) => client::run(args),
        Command::Leader(args) => client::leader(args),
        Command::Observe(args) => client::observe(args),
    }
}

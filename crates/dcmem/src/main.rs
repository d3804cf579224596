//! `dcmem`: command-line front end of dotcompute-memory.
//!
//! - `dcmem bench`: the seed's benchmark table, every row against a baseline measured in the
//!   same run (`--json`, `--plot FILE.png`, `--quick`, `--backend NAME`).
//! - `dcmem info`: every known backend, whether it can be used here, and why not.
//! - `dcmem demo`: a short guided walk through allocate → copy → sync → views → statistics.
//! - `dcmem stats`: runs a small workload and prints the manager's statistics.
//! - `dcmem stream FILE`: streams a file into a device buffer with a progress bar and prints the
//!   transfer report.

mod bench;
mod commands;
mod machine;
mod measure;
mod plot;
mod report;
mod units;

use clap::{Args, Parser, Subcommand};
use commands::stream;
use std::path::PathBuf;
use std::process::ExitCode;

/// Unified host/device memory: benchmarks, backend information, a guided demo, statistics.
#[derive(Debug, Parser)]
#[command(name = "dcmem", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the seed's benchmark table: each row against a baseline from the same run.
    Bench(BenchArgs),
    /// List every known backend: available (with description and memory) or why not.
    Info,
    /// Walk through allocate → copy → sync → views → statistics, printing buffer states.
    Demo {
        /// Backend to run on (cpu, sim, opencl, cuda, metal).
        #[arg(long, env = "DCMEM_BACKEND", default_value = "sim", value_parser = BackendName)]
        backend: String,
    },
    /// Run a small workload and print the manager's statistics.
    Stats {
        /// Backend to run on (cpu, sim, opencl, cuda, metal).
        #[arg(long, env = "DCMEM_BACKEND", default_value = "cpu", value_parser = BackendName)]
        backend: String,
        /// Print the statistics as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stream a file into a device buffer through the transfer engine, with a progress bar.
    Stream(stream::StreamArgs),
}

/// Options of `dcmem bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Backend to measure (cpu, sim, opencl, cuda, metal).
    #[arg(long, env = "DCMEM_BACKEND", default_value = "cpu", value_parser = BackendName)]
    pub backend: String,
    /// Few repetitions: a rough table in a few seconds.
    #[arg(long)]
    pub quick: bool,
    /// Print exactly one JSON object to stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write a PNG bar chart of the results to this file.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Measure only the steps whose name contains this text (case-insensitive), e.g.
    /// `--only "pool hit"`; the step names are those the progress bar shows.
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
    /// Tiny sizes and three repetitions, for tests of the command itself (numbers meaningless).
    #[arg(long, hide = true)]
    pub smoke: bool,
}

/// `--backend NAME` or `DCMEM_BACKEND`: any name that is valid UTF-8 (the library says which
/// names it knows). A name that is not UTF-8 is an error naming both places it may come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BackendName;

impl clap::builder::TypedValueParser for BackendName {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        match value.to_str() {
            Some(name) => Ok(name.to_owned()),
            None => Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidUtf8,
                format!(
                    "the backend name {value:?} (from --backend or DCMEM_BACKEND) is not valid UTF-8; \
                     expected cpu, sim, opencl, cuda or metal\n"
                ),
            )
            .with_cmd(cmd)),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Info => commands::info::run(),
        Command::Demo { backend } => commands::demo::run(&backend),
        Command::Stats { backend, json } => commands::stats::run(&backend, json),
        Command::Stream(args) => stream::run(&args),
    };
    match result {
        Ok(text) => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                // A closed pipe (`dcmem bench | head`) is the reader's choice, not a failure.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("dcmem: error: could not write to stdout: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("dcmem: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the commands fail with: a library error, or a message of our own.
#[derive(Debug)]
pub enum CliError {
    /// From dotcompute-memory.
    Memory(dotcompute_memory::Error),
    /// Anything else (I/O, plotting), already phrased for the user.
    Other(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Memory(e) => write!(f, "{e}")?,
            CliError::Other(s) => f.write_str(s)?,
        }
        if let CliError::Memory(
            dotcompute_memory::Error::UnknownBackend { .. } | dotcompute_memory::Error::BackendUnavailable { .. },
        ) = self
        {
            write!(f, "\n(run `dcmem info` to see which backends this build can use)")?;
        }
        Ok(())
    }
}

impl From<dotcompute_memory::Error> for CliError {
    fn from(e: dotcompute_memory::Error) -> Self {
        CliError::Memory(e)
    }
}

/// Result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;

//! `dcmem`: command-line front end of dotcompute-memory.
//!
//! - `dcmem bench`: the benchmark table, every row against a baseline measured in the
//!   same run (`--json`, `--plot FILE.png`, `--quick`, `--backend NAME`).
//! - `dcmem info`: every known backend, whether it can be used here, and why not.
//! - `dcmem demo`: a short guided walk through allocate → copy → sync → views → statistics.
//! - `dcmem stats`: runs a small workload and prints the manager's statistics.
//! - `dcmem stream FILE`: streams a file into a device buffer with a progress bar and prints the
//!   transfer report.
//! - `dcmem replay FILE`: replays an allocation trace through our pool and through the backend
//!   without one, and compares them.

mod bench;
mod commands;
mod machine;
mod measure;
mod plot;
mod report;
mod units;

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand};
use commands::stream;
use std::path::PathBuf;
use std::process::ExitCode;

/// Unified host/device memory: benchmarks, backend information, a guided demo, statistics,
/// streaming a file to a device, replaying allocation traces.
#[derive(Debug, Parser)]
#[command(name = "dcmem", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the benchmark table: each row against a baseline from the same run.
    Bench(BenchArgs),
    /// List every known backend: available (with description and memory) or why not.
    Info,
    /// Walk through allocate → copy → sync → views → statistics, printing buffer states.
    Demo {
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Run a small workload and print the manager's statistics.
    Stats {
        #[command(flatten)]
        backend: BackendArg,
        /// Print the statistics as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stream a file into a device buffer through the transfer engine, with a progress bar.
    Stream(stream::StreamArgs),
    /// Replay an allocation trace (JSON Lines or RMM's CSV log) through our pool and without one.
    Replay(commands::replay::ReplayArgs),
}

/// Options of `dcmem bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Backend to measure.
    #[command(flatten)]
    pub backend: BackendArg,
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

/// The backend every command that runs on one uses unless told otherwise: the embedded CPU
/// backend, which every build has.
pub const DEFAULT_BACKEND: &str = "cpu";

/// The backends compiled into this binary (dcmem's features enable the library's of the same
/// name), the default first.
pub use dotcompute_memory::backend::{COMPILED_BACKENDS, FEATURE_BACKENDS};

/// `--backend NAME`, the same for every command that runs on a backend.
#[derive(Debug, Args)]
pub struct BackendArg {
    /// Backend to run on (`dcmem info` says which ones this machine can use).
    #[arg(
        id = "backend",
        long = "backend",
        value_name = "NAME",
        env = "DCMEM_BACKEND",
        default_value = DEFAULT_BACKEND,
        value_parser = BackendName
    )]
    pub name: String,
}

/// `--backend NAME` or `DCMEM_BACKEND`: a backend compiled into this binary. Any other name is
/// an error before anything runs, naming where it came from: a known backend left out of this
/// build names the feature that adds it. A blank `DCMEM_BACKEND` means unset, as in the library.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BackendName;

impl BackendName {
    /// Why `name` (not compiled in) cannot be used, and what to do instead.
    fn rejection(name: &str) -> String {
        let offered = COMPILED_BACKENDS.join(", ");
        let key = name.trim().to_ascii_lowercase();
        if key.is_empty() {
            return format!("the backend name given to --backend is empty; give one of {offered}");
        }
        // Metal exists only on Apple platforms: elsewhere no build offers it.
        let buildable = |b: &str| b != "metal" || cfg!(target_os = "macos");
        if FEATURE_BACKENDS.contains(&key.as_str()) && buildable(&key) {
            return format!(
                "the `{key}` backend is not compiled into this binary (it offers {offered}); build one with it: \
                 cargo run --release -p dcmem --features {key} -- ..."
            );
        }
        let missing: Vec<&str> =
            FEATURE_BACKENDS.iter().copied().filter(|b| !COMPILED_BACKENDS.contains(b) && buildable(b)).collect();
        let more = if missing.is_empty() {
            String::new()
        } else {
            let features: Vec<String> = missing.iter().map(|b| format!("`--features {b}`")).collect();
            format!("; {} need a build with {}", missing.join(" and "), features.join(" or "))
        };
        if key == "metal" {
            format!(
                "there is no `metal` backend on this platform (Metal exists only on Apple platforms); \
                 this binary offers {offered}{more}"
            )
        } else {
            format!("unknown backend `{name}`; this binary offers {offered}{more}")
        }
    }
}

impl clap::builder::TypedValueParser for BackendName {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        self.parse_ref_(cmd, arg, value, clap::parser::ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
        source: clap::parser::ValueSource,
    ) -> Result<String, clap::Error> {
        let error = |kind, message: String| clap::Error::raw(kind, message + "\n").with_cmd(cmd);
        let from_env = source == clap::parser::ValueSource::EnvVariable;
        match value.to_str() {
            Some(name) if COMPILED_BACKENDS.contains(&name.trim().to_ascii_lowercase().as_str()) => Ok(name.to_owned()),
            Some(name) if from_env && name.trim().is_empty() => Ok(DEFAULT_BACKEND.to_owned()),
            Some(name) if from_env => Err(error(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "DCMEM_BACKEND is `{name}`: {}; unset DCMEM_BACKEND or pass --backend NAME",
                    Self::rejection(name)
                ),
            )),
            Some(name) => Err(error(clap::error::ErrorKind::InvalidValue, Self::rejection(name))),
            None => Err(error(
                clap::error::ErrorKind::InvalidUtf8,
                format!(
                    "the backend name {value:?} (from {}) is not valid UTF-8; expected one of {}",
                    if from_env { "DCMEM_BACKEND" } else { "--backend" },
                    COMPILED_BACKENDS.join(", ")
                ),
            )),
        }
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(COMPILED_BACKENDS.iter().map(PossibleValue::new)))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Info => commands::info::run(),
        Command::Demo { backend } => commands::demo::run(&backend.name),
        Command::Stats { backend, json } => commands::stats::run(&backend.name, json),
        Command::Stream(args) => stream::run(&args),
        Command::Replay(args) => commands::replay::run(&args),
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
            match e {
                // Bad input, like a usage error clap reports.
                CliError::BadInput(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
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
    /// Input the command cannot use (a malformed trace), phrased for the user; exits with
    /// status 2, as clap's usage errors do.
    BadInput(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Memory(e) => write!(f, "{e}")?,
            CliError::Other(s) | CliError::BadInput(s) => f.write_str(s)?,
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

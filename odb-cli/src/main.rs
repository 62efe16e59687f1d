//! `odb`: looks inside a running ODB server.
//!
//! ```text
//! odb stats
//! odb schemas
//! odb count shop.Item
//! odb ls shop.Item --where name=widget
//! odb show 42
//! odb tail
//! odb dump shop --json
//! ```

use clap::{Parser, Subcommand};
use odb_cli::commands::{self, Output};
use odb_cli::{Session, Target};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Looks inside a running ODB server: figures, schemas, objects and a live commit feed.
/// Read-only. Values are decoded through the field descriptions clients send with their
/// schemas.
#[derive(Parser, Debug)]
#[command(name = "odb", version)]
struct Args {
    /// The server: odb://host:port, or odbs://host:port for TLS.
    #[arg(
        long,
        env = "ODB_URL",
        default_value = "odb://127.0.0.1:8000",
        global = true
    )]
    url: String,
    /// The service token.
    #[arg(
        long,
        env = "ODB_TOKEN",
        hide_env_values = true,
        global = true,
        default_value = ""
    )]
    token: String,
    /// PEM certificates to trust for odbs:// (a CA, or the server's own certificate).
    #[arg(long, env = "ODB_TLS_CA", value_name = "PEM", global = true)]
    tls_ca: Option<PathBuf>,
    /// How long connecting and each request may take, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000, global = true)]
    timeout_ms: u64,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The server's figures: tid, connections, objects, memory, subscriptions.
    Stats,
    /// Every schema with its types, object counts, fields (with their types) and indices.
    Schemas,
    /// How many objects of a type exist.
    Count {
        /// The type, as schema.Type.
        r#type: String,
    },
    /// The objects of a type, one per line.
    Ls {
        /// The type, as schema.Type.
        r#type: String,
        /// Only objects whose single-field index has this value: INDEX=VALUE.
        #[arg(long = "where", value_name = "INDEX=VALUE")]
        filter: Option<String>,
        /// Show at most N objects.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// One object with all its fields and index values.
    Show {
        /// The object's id.
        id: u64,
    },
    /// A live feed of commits, one line per commit with what changed.
    Tail {
        /// Stop after N commits.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Every object of a schema.
    Dump {
        /// The schema's name.
        schema: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("odb: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odb: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), odb_cli::CliError> {
    let target = Target {
        url: args.url,
        token: args.token,
        tls_ca: args.tls_ca,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
    };
    let mut session = Session::connect(&target).await?;
    let mut out = Output {
        out: std::io::stdout().lock(),
        json: args.json,
    };
    let s = &mut session;
    match args.command {
        Command::Stats => commands::stats(s, &mut out).await,
        Command::Schemas => commands::schemas(s, &mut out).await,
        Command::Count { r#type } => commands::count(s, &mut out, &r#type).await,
        Command::Ls {
            r#type,
            filter,
            limit,
        } => commands::ls(s, &mut out, &r#type, filter.as_deref(), limit).await,
        Command::Show { id } => commands::show(s, &mut out, id).await,
        Command::Tail { count } => commands::tail(s, &mut out, count).await,
        Command::Dump { schema } => commands::dump(s, &mut out, &schema).await,
    }
}

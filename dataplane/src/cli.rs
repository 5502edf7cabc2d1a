//! The command-line interface (stable: see `DESIGN.md`): `dataplane validate` and
//! `dataplane routes`. Every flag also reads an environment variable.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dataplane_config::{Build, Options, Severity, build};

use crate::config_files;

/// Egress dataplane for Istio ServiceEntries.
#[derive(Debug, Parser)]
#[command(name = "dataplane", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check configuration files like `istioctl validate`: exit 0 when valid (warnings are
    /// printed), 1 on any error (or any warning with --strict), 2 on usage errors.
    Validate(ValidateArgs),
    /// Print the compiled route table as the proxy would use it.
    Routes(RoutesArgs),
    /// Run the proxy.
    Run(crate::run::RunArgs),
    /// Print (or with --apply install, with --remove delete) the nftables capture rules.
    Capture(crate::capture::CaptureArgs),
}

/// Where the configuration comes from.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Files or directories (every *.yaml / *.yml directly inside) of Istio YAML.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// MeshConfig file (outboundTrafficPolicy, defaultServiceExportTo, connectTimeout...).
    #[arg(long, env = "DATAPLANE_MESH", value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    /// The namespace the proxy serves (exportTo, DestinationRule lookup, precedence).
    #[arg(long, env = "DATAPLANE_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

/// `dataplane validate`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Treat warnings as errors.
    #[arg(long, env = "DATAPLANE_STRICT")]
    pub strict: bool,
    /// Configuration.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `dataplane routes`
#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Configuration.
    #[command(flatten)]
    pub config: ConfigArgs,
}

fn load(args: &ConfigArgs) -> Result<Build, String> {
    let sources = config_files::read_sources(&args.paths)?;
    let mesh = config_files::read_mesh(args.mesh.as_deref())?;
    let exists = config_files::file_exists;
    let opts = Options {
        namespace: &args.namespace,
        file_exists: Some(&exists),
        ..Options::default()
    };
    Ok(build(&sources, mesh.as_ref(), &opts))
}

/// Print every finding on its own line to `out`.
fn print_findings(out: &mut impl Write, b: &Build) {
    for f in &b.findings {
        // A closed pipe is not worth a panic.
        let _ = writeln!(out, "{f}");
    }
}

/// `dataplane validate`
pub fn validate(args: &ValidateArgs) -> ExitCode {
    let b = match load(&args.config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    print_findings(&mut stdout, &b);
    let (errors, warnings) = (b.errors(), b.warnings());
    let objects = b.objects_seen;
    let failed = errors > 0 || (args.strict && warnings > 0);
    let verdict = if failed { "invalid" } else { "valid" };
    let _ = writeln!(
        stdout,
        "{verdict}: {objects} object(s), {errors} error(s), {warnings} warning(s)"
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `dataplane routes`
pub fn routes(args: &RoutesArgs) -> ExitCode {
    let b = match load(&args.config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stderr = std::io::stderr().lock();
    for f in b
        .findings
        .iter()
        .filter(|f| f.severity() == Severity::Error || !args.json)
    {
        let _ = writeln!(stderr, "{f}");
    }
    let Some(table) = &b.table else {
        let _ = writeln!(
            stderr,
            "error: the configuration is invalid ({} error(s)); no routes",
            b.errors()
        );
        return ExitCode::FAILURE;
    };
    let view = table.view();
    let text = if args.json {
        match serde_json::to_string_pretty(&view) {
            Ok(s) => s + "\n",
            Err(e) => {
                let _ = writeln!(stderr, "error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        dataplane_config::table::render_text(&view)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

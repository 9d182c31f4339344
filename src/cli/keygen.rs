//! `starling keygen`: make a cluster key file.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{EXIT_FAILED, EXIT_USAGE};
use crate::net::ClusterKey;

/// `starling keygen`.
#[derive(Debug, Clone, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the key (mode 0600). `-` writes the key file text to
    /// standard output instead (for a secret store).
    #[arg(long, value_name = "PATH", default_value = "cluster.key")]
    out: PathBuf,
    /// Replace the file if it exists (nodes holding the old key can then
    /// no longer connect to nodes started with the new one).
    #[arg(long)]
    force: bool,
}

/// Make a key and write it; exit 2 if the file exists (without `--force`),
/// 1 if it cannot be written.
pub(crate) fn keygen(args: &KeygenArgs) -> ExitCode {
    let key = match ClusterKey::generate() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("starling: cannot make a cluster key: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if args.out.as_os_str() == "-" {
        let mut out = std::io::stdout();
        return match out
            .write_all(key.to_file_text().as_bytes())
            .and_then(|()| out.flush())
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("starling: cannot write the key to standard output: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    let path = &args.out;
    if path.exists() {
        if !args.force {
            eprintln!(
                "starling: {} exists; keeping it (nodes may hold that key). Use --force to replace it",
                path.display()
            );
            return ExitCode::from(EXIT_USAGE);
        }
        if let Err(e) = std::fs::remove_file(path) {
            eprintln!("starling: cannot replace {}: {e}", path.display());
            return ExitCode::from(EXIT_FAILED);
        }
    }
    if let Err(e) = key.write_new(path) {
        eprintln!("starling: {e}");
        return ExitCode::from(EXIT_FAILED);
    }
    println!("wrote cluster key {} (mode 0600)", path.display());
    println!("fingerprint {}", key.fingerprint());
    println!();
    println!(
        "This file is the one thing to copy to other nodes. Keep it secret: whoever holds it \
         can join the cluster."
    );
    println!(
        "Start every node with it: starling run --cluster-key {} (or cluster_key_file = \"{}\" \
         in the config file).",
        path.display(),
        path.display()
    );
    ExitCode::SUCCESS
}

//! `handoff dkim keygen`: a new DKIM key for a sending domain, the DNS record to publish and the
//! policy lines to add.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use crate::autoreply::dkim;
use crate::policy::DkimAlgorithm;

#[derive(Debug, Subcommand)]
pub enum DkimCommand {
    /// Write a new signing key (mode 0600, never over an existing file); print the DNS TXT
    /// record to publish and the `[dkim]` lines to add to the policy
    Keygen(KeygenArgs),
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The sending domain (the `From:` domain of the replies to sign)
    #[arg(long, value_name = "DOMAIN")]
    pub domain: String,
    /// The selector: the DNS name the key is published under (`SELECTOR._domainkey.DOMAIN`)
    #[arg(long, value_name = "SELECTOR")]
    pub selector: String,
    #[arg(long, value_enum, default_value_t = Algorithm::Ed25519)]
    pub algorithm: Algorithm,
    /// Where to write the private key [default: ./DOMAIN.SELECTOR.pem]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    /// ed25519-sha256 (RFC 8463): short keys and records
    Ed25519,
    /// rsa-sha256, 2048 bits: what every verifier understands
    Rsa,
}

pub fn run(cmd: &DkimCommand) -> ExitCode {
    match cmd {
        DkimCommand::Keygen(args) => match keygen(args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("handoff dkim keygen: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Why no key was written.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("`{0}` is not a domain name")]
    Domain(String),
    #[error("`{0}` is not a DKIM selector (letters, digits, inner hyphens, dot-separated)")]
    Selector(String),
    #[error(transparent)]
    Key(#[from] dkim::KeyError),
    #[error("{} exists; not overwritten (remove it or choose another --out)", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Writes the key and returns what to print.
pub fn keygen(args: &KeygenArgs) -> Result<String, KeygenError> {
    let domain = crate::address::domain_lookup_form(&args.domain)
        .ok_or_else(|| KeygenError::Domain(args.domain.clone()))?;
    let selector = args.selector.trim().to_ascii_lowercase();
    if !crate::policy::is_dkim_selector(&selector) {
        return Err(KeygenError::Selector(args.selector.clone()));
    }
    let algorithm = match args.algorithm {
        Algorithm::Ed25519 => DkimAlgorithm::Ed25519Sha256,
        Algorithm::Rsa => DkimAlgorithm::RsaSha256,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{domain}.{selector}.pem")));
    let generated = dkim::generate(algorithm)?;
    write_key(&out, generated.private_pem.as_bytes())?;
    // The policy names the file absolutely: it is read relative to the policy file otherwise.
    let shown = std::path::absolute(&out).unwrap_or_else(|_| out.clone());
    let txt = dkim::txt_value(algorithm, &generated.public_b64);
    let mut text = format!(
        "wrote the {} key to {} (mode 0600)\n",
        algorithm.as_str(),
        shown.display()
    );
    if nix::unistd::geteuid().is_root() {
        text.push_str("handoff reads it as its own user: chown that user (e.g. `chown handoff: FILE`) before loading the policy\n");
    }
    text.push_str("\nPublish this DNS record:\n\n");
    text.push_str(&dkim::dns_record(&domain, &selector, &txt));
    text.push_str("\n\nAdd these lines to the policy file:\n\n");
    text.push_str(&dkim::policy_snippet(
        &domain,
        &selector,
        algorithm,
        &shown.to_string_lossy(),
    ));
    Ok(text)
}

/// Creates the key file with mode 0600 from the start (never a moment readable by others), and
/// never over an existing file (`O_EXCL`).
fn write_key(path: &Path, pem: &[u8]) -> Result<(), KeygenError> {
    let err = |cause: std::io::Error| {
        if cause.kind() == std::io::ErrorKind::AlreadyExists {
            KeygenError::Exists(path.to_path_buf())
        } else {
            KeygenError::Write {
                path: path.to_path_buf(),
                cause,
            }
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(pem).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}

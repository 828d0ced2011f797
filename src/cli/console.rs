//! `handoff console user …`: manage the archive console's users file.
//!
//! Passwords come from a prompt on the terminal (not echoed, asked twice) or from the first
//! line of standard input (`--password-stdin`), never from an argument: arguments are visible
//! to every user of the machine (`ps`) and kept in shell histories.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::console::totp;
use crate::console::users::{self, Role, User, Users};
use crate::policy;

#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Add, change, remove and list the console's users ([console] users)
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user with a role (and optionally departments they are limited to)
    Add(AddArgs),
    /// Set a user's password
    Passwd(PasswdArgs),
    /// Remove a user
    Remove(NameArgs),
    /// List the users, their roles and departments
    List(UsersArg),
    /// Give a user a TOTP second factor: prints the otpauth:// URI for their app, once
    Totp(TotpArgs),
    /// Give a user an API token (replacing theirs): prints it, once; only its hash is kept
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TotpArgs {
    pub name: String,
    /// Remove the user's second factor instead
    #[arg(long)]
    pub remove: bool,
    #[command(flatten)]
    pub users: UsersArg,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    pub name: String,
    /// Revoke the user's API token instead
    #[arg(long)]
    pub revoke: bool,
    #[command(flatten)]
    pub users: UsersArg,
}

#[derive(Debug, Args)]
pub struct UsersArg {
    /// The users file [default: [console] users of the policy]
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub users: UsersArg,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub name: String,
    /// archive_admin: search, view, download and export mail; auditor: the audit log only
    #[arg(long, value_enum)]
    pub role: Role,
    /// Limit an archive admin to mail of this department and its sub-departments (repeatable)
    #[arg(long = "department", value_name = "NAME")]
    pub departments: Vec<String>,
    /// Read the password from the first line of standard input instead of a prompt
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub users: UsersArg,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    pub name: String,
    /// Read the password from the first line of standard input instead of a prompt
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub users: UsersArg,
}

pub fn run(config: PathBuf, cmd: &ConsoleCommand) -> ExitCode {
    let ConsoleCommand::User(cmd) = cmd;
    match user(&config, cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("handoff console: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn user(config: &Path, cmd: &UserCommand) -> Result<(), String> {
    let arg = match cmd {
        UserCommand::Add(a) => &a.users,
        UserCommand::Passwd(a) => &a.users,
        UserCommand::Remove(a) => &a.users,
        UserCommand::List(a) => a,
        UserCommand::Totp(a) => &a.users,
        UserCommand::Token(a) => &a.users,
    };
    let path = users_path(config, arg)?;
    let mut all = Users::load(&path, true).map_err(|e| e.to_string())?;
    match cmd {
        UserCommand::Add(a) => {
            users::check_name(&a.name)?;
            if all.users.contains_key(&a.name) {
                return Err(format!(
                    "{}: user `{}` exists (`passwd` changes the password)",
                    path.display(),
                    a.name
                ));
            }
            for d in &a.departments {
                users::check_department(d)?;
            }
            if a.role == Role::Auditor && !a.departments.is_empty() {
                return Err(
                    "--department limits an archive_admin; an auditor sees the whole audit log"
                        .into(),
                );
            }
            let password = new_password(a.password_stdin)?;
            all.users.insert(
                a.name.clone(),
                User {
                    role: a.role,
                    password: users::hash_password(&password)?,
                    departments: a.departments.clone(),
                    totp: None,
                    token: None,
                },
            );
            all.save(&path).map_err(|e| e.to_string())?;
            println!("{}: added {} ({})", path.display(), a.name, a.role.as_str());
        }
        UserCommand::Passwd(a) => {
            if !all.users.contains_key(&a.name) {
                return Err(format!("{}: no user `{}`", path.display(), a.name));
            }
            let password = new_password(a.password_stdin)?;
            let hash = users::hash_password(&password)?;
            if let Some(u) = all.users.get_mut(&a.name) {
                u.password = hash;
            }
            all.save(&path).map_err(|e| e.to_string())?;
            println!("{}: password of {} changed", path.display(), a.name);
        }
        UserCommand::Remove(a) => {
            if all.users.remove(&a.name).is_none() {
                return Err(format!("{}: no user `{}`", path.display(), a.name));
            }
            all.save(&path).map_err(|e| e.to_string())?;
            println!("{}: removed {}", path.display(), a.name);
        }
        UserCommand::List(_) => {
            for (name, u) in &all.users {
                let scope = match u.departments.is_empty() {
                    true => "all departments".to_string(),
                    false => u.departments.join(","),
                };
                let totp = if u.totp.is_some() { "totp" } else { "-" };
                let token = if u.token.is_some() { "token" } else { "-" };
                println!("{name}\t{}\t{scope}\t{totp}\t{token}", u.role.as_str());
            }
            eprintln!("{} users", all.users.len());
        }
        UserCommand::Totp(a) => {
            let Some(u) = all.users.get_mut(&a.name) else {
                return Err(format!("{}: no user `{}`", path.display(), a.name));
            };
            if a.remove {
                if u.totp.take().is_none() {
                    return Err(format!(
                        "{}: `{}` has no second factor",
                        path.display(),
                        a.name
                    ));
                }
                all.save(&path).map_err(|e| e.to_string())?;
                println!("{}: second factor of {} removed", path.display(), a.name);
                return Ok(());
            }
            let secret = totp::new_secret()?;
            let replaced = u.totp.replace(totp::base32(&secret)).is_some();
            all.save(&path).map_err(|e| e.to_string())?;
            // The one time the secret is shown: the daemon reads it from the file from now on.
            println!("{}", totp::uri(&a.name, &secret));
            eprintln!(
                "{}: {} second factor of {}: add the URI above to an authenticator app (as a QR code: qrencode -t ansiutf8 'URI'); it is not shown again",
                path.display(),
                if replaced { "new" } else { "added a" },
                a.name
            );
        }
        UserCommand::Token(a) => {
            let Some(u) = all.users.get_mut(&a.name) else {
                return Err(format!("{}: no user `{}`", path.display(), a.name));
            };
            if a.revoke {
                if u.token.take().is_none() {
                    return Err(format!("{}: `{}` has no API token", path.display(), a.name));
                }
                all.save(&path).map_err(|e| e.to_string())?;
                println!("{}: API token of {} revoked", path.display(), a.name);
                return Ok(());
            }
            let token = crate::console::session::token();
            let replaced = u.token.replace(users::token_hash(&token)).is_some();
            all.save(&path).map_err(|e| e.to_string())?;
            println!("{token}");
            eprintln!(
                "{}: {} API token of {} (send it as `Authorization: Bearer TOKEN` to /api/); only its hash is kept, it is not shown again",
                path.display(),
                if replaced { "new" } else { "added an" },
                a.name
            );
        }
    }
    Ok(())
}

/// `--users`, else `[console] users` of the policy.
fn users_path(config: &Path, arg: &UsersArg) -> Result<PathBuf, String> {
    if let Some(p) = &arg.users {
        return Ok(p.clone());
    }
    let p = policy::load(config)
        .map_err(|e| format!("{e}\n(--users FILE names the users file without a policy)"))?;
    p.settings.console.map(|c| c.users).ok_or_else(|| {
        format!(
            "{}: no [console] with `listen` and `users`; --users FILE names the users file",
            config.display()
        )
    })
}

/// The new password: the first line of stdin, or typed twice at a prompt.
fn new_password(from_stdin: bool) -> Result<String, String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .take(users::MAX_PASSWORD_BYTES as u64 + 2)
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        strip_newline(line)
    } else {
        let first = prompt("New password: ")?;
        users::check_password(&first)?;
        let second = prompt("Again: ")?;
        if first != second {
            return Err("the passwords differ".into());
        }
        first
    };
    users::check_password(&password)?;
    Ok(password)
}

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// Reads one line from the terminal with echo off.
fn prompt(text: &str) -> Result<String, String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| format!("no terminal to ask for the password ({e}); use --password-stdin"))?;
    let old = tcgetattr(&tty).map_err(|e| format!("/dev/tty: {e}"))?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(|e| format!("/dev/tty: {e}"))?;
    let mut out = &tty;
    let asked = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    let mut line = String::new();
    let read = asked.and_then(|_| {
        std::io::BufReader::new(&tty)
            .take(users::MAX_PASSWORD_BYTES as u64 + 2)
            .read_line(&mut line)
    });
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &old);
    read.map_err(|e| format!("/dev/tty: {e}"))?;
    Ok(strip_newline(line))
}

//! The console's pages and API. Each handler: who is asking and may their role come here (the
//! [`Authz`] extractor: a session, or an API token on `/api/`; a wrong role is audited and
//! refused with 403 before the handler runs), may they see this (the department scope: 403,
//! audited), the audit record, then the answer.

use std::fmt::Write;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, Form, FromRequestParts, Path as UrlPath, Query, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Deserialize;

use super::html::{self, Viewer, esc, url_param};
use super::session::{Gate, same_token};
use super::totp;
use super::users::{self, Role};
use super::{Console, lock};

// Zip exports and attachment downloads: a child of this module, so that they use its session
// check, refusals and audit as they are.
#[path = "export.rs"]
mod export;
use crate::index::{Search, analysis};
use crate::journal::record::{MessageMeta, message_of};
use crate::journal::{RecordId, search};

const COOKIE: &str = "handoff_console";
/// Hits on one result page.
const PAGE_SIZE: usize = 50;
/// Longest query string and form body accepted (a search has a dozen short fields).
const MAX_QUERY: usize = 4096;
const MAX_FIELD: usize = 512;
/// Pages past this are refused: a deep offset costs the index as much as every page before it.
const MAX_PAGE: usize = 200;

/// The strict policy: nothing from anywhere but this origin's style sheet; no scripts at all;
/// images only from here (a remote image in a message, were it ever left in, does not load);
/// forms post only here; never in a frame.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(summary))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/password", get(password_form).post(password))
        .route("/search", get(search_page))
        .route("/message/{id}", get(message_page))
        .route("/message/{id}/eml", get(download))
        .route("/message/{id}/attachment/{n}", get(export::attachment))
        .route(
            "/export",
            post(export::export_form).layer(DefaultBodyLimit::max(export::FORM_LIMIT)),
        )
        .route(
            "/api/export",
            post(export::api_export).layer(DefaultBodyLimit::max(export::API_LIMIT)),
        )
        .route("/audit", get(audit_page))
        .route("/api/search", get(api_search))
        .route("/api/message/{id}", get(api_message))
        .route("/static/console.css", get(css))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_QUERY))
        .layer(middleware::from_fn(guard))
        .with_state(console)
}

/// On every answer: the security headers. On every request: a bounded query string.
async fn guard(req: Request, next: Next) -> Response {
    let too_long = req.uri().query().is_some_and(|q| q.len() > MAX_QUERY);
    let mut resp = match too_long {
        true => (StatusCode::BAD_REQUEST, "query too long").into_response(),
        false => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        html::CSS,
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(html::error(None, "Not found", "No such page.")),
    )
        .into_response()
}

/// A logged-in user making this request.
pub struct Authed {
    pub name: String,
    pub role: Role,
    pub departments: Vec<String>,
    /// The session's CSRF token (empty for a bearer call).
    pub csrf: String,
    /// The session id (empty for a bearer call).
    sid: String,
    pub source: SocketAddr,
    /// Authenticated by an API token (`Authorization: Bearer`), not a session.
    pub bearer: bool,
}

impl Authed {
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer {
            name: &self.name,
            role: self.role,
            csrf: &self.csrf,
        }
    }

    /// Whether a state-changing request carries this session's CSRF token. A bearer call needs
    /// none: a browser never adds an `Authorization` header on its own, so another site cannot
    /// forge one.
    pub fn csrf_ok(&self, token: &str) -> bool {
        self.bearer || same_token(&self.csrf, token)
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

/// The token of an `Authorization: Bearer TOKEN` header (RFC 6750 section 2.1), if there is one.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict")
}

/// The session's user, still in the users file with the same role; else the login page (or
/// 401 for the API). For the API (`api`), an `Authorization: Bearer` token instead of the
/// session: a request that carries one is judged by it alone. Pages never take a token.
pub fn authed(
    c: &Console,
    headers: &HeaderMap,
    source: SocketAddr,
    api: bool,
) -> Result<Authed, Response> {
    let refuse = || match api {
        true => (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "log in first"})),
        )
            .into_response(),
        false => Redirect::to("/login").into_response(),
    };
    if api && let Some(token) = bearer_token(headers) {
        let all = c.users();
        let Some((name, u)) = users::by_token(&all, token) else {
            return Err(refuse());
        };
        return Ok(Authed {
            name: name.to_string(),
            role: u.role,
            departments: u.departments.clone(),
            csrf: String::new(),
            sid: String::new(),
            source,
            bearer: true,
        });
    }
    let Some(sid) = session_id(headers) else {
        return Err(refuse());
    };
    let Some(s) = lock(&c.sessions).get(&sid, Instant::now()) else {
        return Err(refuse());
    };
    let Some(name) = s.user else {
        return Err(refuse());
    };
    let all = c.users();
    let Some(u) = all.users.get(&name) else {
        lock(&c.sessions).remove_user(&name);
        return Err(refuse());
    };
    Ok(Authed {
        name,
        role: u.role,
        departments: u.departments.clone(),
        csrf: s.csrf,
        sid,
        source,
        bearer: false,
    })
}

/// How a refusal is answered: a page (`Page`: the login redirect, an HTML 403) or JSON
/// (`Api`: 401, a JSON 403; API tokens accepted).
pub trait Flavour: Send + Sync + 'static {
    const API: bool;
}
pub struct Page;
pub struct Api;
impl Flavour for Page {
    const API: bool = false;
}
impl Flavour for Api {
    const API: bool = true;
}

/// Which roles a route admits.
pub trait Allowed: Send + Sync + 'static {
    fn allows(role: Role) -> bool;
}
pub struct Admins;
pub struct Auditors;
pub struct Anyone;
impl Allowed for Admins {
    fn allows(role: Role) -> bool {
        role == Role::ArchiveAdmin
    }
}
impl Allowed for Auditors {
    fn allows(role: Role) -> bool {
        role == Role::Auditor
    }
}
impl Allowed for Anyone {
    fn allows(_: Role) -> bool {
        true
    }
}

/// The extractor every route takes: the request's user, authenticated (session, or API token
/// on `Api` routes), with a role `R` admits. Anyone else is refused before the handler runs:
/// not logged in, the login page (401 for the API); the wrong role, audited (`denied`), then
/// 403.
pub struct Authz<R, F>(pub Authed, PhantomData<fn() -> (R, F)>);

pub type AdminPage = Authz<Admins, Page>;
pub type AdminApi = Authz<Admins, Api>;
pub type AuditorPage = Authz<Auditors, Page>;
pub type AnyPage = Authz<Anyone, Page>;

impl<R: Allowed, F: Flavour> FromRequestParts<Arc<Console>> for Authz<R, F> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        c: &Arc<Console>,
    ) -> Result<Self, Response> {
        // `serve` puts the peer's address on every request.
        let Some(ConnectInfo(source)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied()
        else {
            return Err(internal("a request without its peer address"));
        };
        let a = match authed(c, &parts.headers, source, F::API) {
            Ok(a) => a,
            Err(r) => {
                if F::API && bearer_token(&parts.headers).is_some() {
                    // A wrong or revoked token is a failed login.
                    let q = serde_json::json!({ "request": request_line(parts) });
                    if let Err(e) = c.audit("", None, source, "token-failed", q, 0).await {
                        return Err(unaudited(e));
                    }
                }
                return Err(r);
            }
        };
        if !R::allows(a.role) {
            let what = request_line(parts);
            return Err(deny(c, &a, &what, serde_json::Value::Null, F::API).await);
        }
        Ok(Authz(a, PhantomData))
    }
}

/// `GET /search`: the method and the path (bounded; the query string is left out, the
/// handler audits what it means).
fn request_line(parts: &axum::http::request::Parts) -> String {
    let path: String = parts.uri.path().chars().take(200).collect();
    format!("{} {path}", parts.method)
}

/// 503 when the audit record cannot be written: nothing is shown without one.
fn unaudited(e: crate::journal::JournalError) -> Response {
    tracing::error!("archive console: cannot write the audit record: {e}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(html::error(
            None,
            "Unavailable",
            "The audit record cannot be written; nothing is shown without one.",
        )),
    )
        .into_response()
}

/// Refuses a request the user's role (or scope) does not allow: audited, then 403.
pub async fn deny(
    c: &Console,
    a: &Authed,
    what: &str,
    detail: serde_json::Value,
    api: bool,
) -> Response {
    let q = serde_json::json!({ "request": what, "detail": detail });
    if let Err(e) = c
        .audit(&a.name, Some(a.role), a.source, "denied", q, 0)
        .await
    {
        return unaudited(e);
    }
    match api {
        true => (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"error": "forbidden"})),
        )
            .into_response(),
        false => (
            StatusCode::FORBIDDEN,
            Html(html::error(
                Some(&a.viewer()),
                "Forbidden",
                "Your role does not allow this.",
            )),
        )
            .into_response(),
    }
}

fn bad_request(a: Option<&Authed>, msg: &str, api: bool) -> Response {
    match api {
        true => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": msg})),
        )
            .into_response(),
        false => (
            StatusCode::BAD_REQUEST,
            Html(html::error(
                a.map(Authed::viewer).as_ref(),
                "Bad request",
                msg,
            )),
        )
            .into_response(),
    }
}

fn internal(msg: impl std::fmt::Display) -> Response {
    tracing::error!("archive console: {msg}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Html(html::error(
            None,
            "Error",
            "Something went wrong; the daemon's log says what.",
        )),
    )
        .into_response()
}

// ---- login and logout ----

async fn login_form(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    // An existing anonymous session keeps its token (two tabs); otherwise a new one.
    let now = Instant::now();
    if let Some(sid) = session_id(&headers)
        && let Some(s) = lock(&c.sessions).get(&sid, now)
    {
        if let Some(name) = &s.user {
            // Each role's home: an auditor sent to the summary would only meet a 403.
            let home = match c.users().users.get(name).map(|u| u.role) {
                Some(Role::Auditor) => "/audit",
                _ => "/",
            };
            return Redirect::to(home).into_response();
        }
        return Html(html::login(&s.csrf, None)).into_response();
    }
    let (sid, s) = lock(&c.sessions).create(None, now);
    (
        [(header::SET_COOKIE, cookie(&sid))],
        Html(html::login(&s.csrf, None)),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    user: String,
    password: String,
    /// The TOTP code, for users with a second factor.
    #[serde(default)]
    code: String,
}

/// The one answer for every wrong credential: which one was wrong is not said.
const WRONG_LOGIN: &str = "Wrong user name or password (or one-time code).";

async fn login(
    State(c): State<Arc<Console>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let now = Instant::now();
    let session =
        session_id(&headers).and_then(|sid| lock(&c.sessions).get(&sid, now).map(|s| (sid, s)));
    // The name as typed, bounded, for the audit trail and the throttle.
    let typed: String = f.user.chars().take(64).collect();
    let Some((old_sid, s)) =
        session.filter(|(_, s)| s.user.is_none() && same_token(&s.csrf, &f.csrf))
    else {
        let q = serde_json::json!({ "request": "POST /login", "detail": "missing or wrong CSRF token" });
        if let Err(e) = c.audit(&typed, None, source, "denied", q, 0).await {
            return unaudited(e);
        }
        return (
            StatusCode::FORBIDDEN,
            Html(html::error(
                None,
                "Forbidden",
                "The form expired; reload the login page.",
            )),
        )
            .into_response();
    };
    let src = source.ip().to_string();
    let gate = lock(&c.throttle).gate(&typed, &src, now);
    if let Gate::Locked(left) = gate {
        let q = serde_json::json!({ "locked_seconds": left.as_secs() });
        if let Err(e) = c.audit(&typed, None, source, "login-locked", q, 0).await {
            return unaudited(e);
        }
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Html(html::login(
                &s.csrf,
                Some("Too many failed logins: try again later."),
            )),
        )
            .into_response();
    }
    let all = c.users();
    let (name, password) = (typed.clone(), f.password);
    let found = tokio::task::spawn_blocking(move || {
        users::authenticate(&all, &name, &password).map(|u| (u.role, u.totp_secret()))
    })
    .await
    .ok()
    .flatten();
    // The second factor, checked only after the password (a wrong password must not use up
    // a code), and each code accepted once.
    let checked = found.as_ref().and_then(|(role, secret)| match secret {
        None => Some((*role, false)),
        Some(secret) => {
            let now = jiff::Timestamp::now().as_second().max(0) as u64;
            let mut used = lock(&c.totp_used);
            let step = totp::verify(secret, &f.code, now, used.get(&typed).copied())?;
            used.insert(typed.clone(), step);
            Some((*role, true))
        }
    });
    let Some((role, second_factor)) = checked else {
        lock(&c.throttle).failed(&typed, &src, now);
        let q = match found {
            Some(_) => serde_json::json!({ "factor": "totp" }),
            None => serde_json::Value::Null,
        };
        if let Err(e) = c.audit(&typed, None, source, "login-failed", q, 0).await {
            return unaudited(e);
        }
        return (
            StatusCode::UNAUTHORIZED,
            Html(html::login(&s.csrf, Some(WRONG_LOGIN))),
        )
            .into_response();
    };
    if c.settings.require_totp && !second_factor {
        let q = serde_json::json!({ "reason": "no second factor ([console] require_totp)" });
        if let Err(e) = c
            .audit(&typed, Some(role), source, "login-refused", q, 0)
            .await
        {
            return unaudited(e);
        }
        return (
            StatusCode::FORBIDDEN,
            Html(html::login(
                &s.csrf,
                Some("This console requires a second factor and you have none: ask the administrator of the users file to run `handoff console user totp` for you."),
            )),
        )
            .into_response();
    }
    let q = serde_json::json!({ "totp": second_factor });
    if let Err(e) = c.audit(&typed, Some(role), source, "login", q, 0).await {
        return unaudited(e);
    }
    lock(&c.throttle).succeeded(&typed);
    // A new id at login: an id planted before (session fixation) is worth nothing.
    let sid = {
        let mut sessions = lock(&c.sessions);
        sessions.remove(&old_sid);
        sessions.create(Some(typed), now).0
    };
    let home = match role {
        Role::ArchiveAdmin => "/",
        Role::Auditor => "/audit",
    };
    ([(header::SET_COOKIE, cookie(&sid))], Redirect::to(home)).into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    /// Missing: refused like a wrong one (403, audited), not as a malformed form.
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(c): State<Arc<Console>>,
    Authz(a, _): AnyPage,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !a.csrf_ok(&f.csrf) {
        return deny(
            &c,
            &a,
            "POST /logout",
            "missing or wrong CSRF token".into(),
            false,
        )
        .await;
    }
    if let Err(e) = c
        .audit(
            &a.name,
            Some(a.role),
            a.source,
            "logout",
            serde_json::Value::Null,
            0,
        )
        .await
    {
        return unaudited(e);
    }
    lock(&c.sessions).remove(&a.sid);
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}

// ---- password change ----

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    again: String,
}

fn password_page(a: &Authed, status: StatusCode, message: Option<(&str, bool)>) -> Response {
    let mut body = String::new();
    if let Some((m, ok)) = message {
        let class = if ok { "ok" } else { "err" };
        let _ = write!(body, "<p class=\"{class}\" id=\"message\">{}</p>", esc(m));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/password\" id=\"password\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <p><label>Current password <input name=\"current\" type=\"password\" autocomplete=\"current-password\" required maxlength=\"{max}\"></label></p>\
         <p><label>New password <input name=\"new\" type=\"password\" autocomplete=\"new-password\" required minlength=\"{min}\" maxlength=\"{max}\"></label></p>\
         <p><label>New password again <input name=\"again\" type=\"password\" autocomplete=\"new-password\" required minlength=\"{min}\" maxlength=\"{max}\"></label></p>\
         <p>At least {min} characters. Your other sessions end when it is changed.</p>\
         <p><button type=\"submit\" id=\"change\">Change password</button></p></form>",
        esc(&a.csrf),
        min = users::MIN_PASSWORD_CHARS,
        max = users::MAX_PASSWORD_BYTES,
    );
    (
        status,
        Html(html::page("Change password", Some(&a.viewer()), &body)),
    )
        .into_response()
}

async fn password_form(Authz(a, _): AnyPage) -> Response {
    password_page(&a, StatusCode::OK, None)
}

/// Changes the user's own password: the same rules as `console user passwd`; the current
/// password is checked like a login (a wrong one counts toward the lockout, so a stolen session
/// cannot guess it); audited before the users file is written; the user's other sessions end.
async fn password(
    State(c): State<Arc<Console>>,
    Authz(a, _): AnyPage,
    Form(f): Form<PasswordForm>,
) -> Response {
    if !same_token(&a.csrf, &f.csrf) {
        return deny(
            &c,
            &a,
            "POST /password",
            "missing or wrong CSRF token".into(),
            false,
        )
        .await;
    }
    let now = Instant::now();
    let src = a.source.ip().to_string();
    let gate = lock(&c.throttle).gate(&a.name, &src, now);
    if let Gate::Locked(left) = gate {
        let q = serde_json::json!({ "locked_seconds": left.as_secs() });
        if let Err(e) = c
            .audit(&a.name, Some(a.role), a.source, "password-locked", q, 0)
            .await
        {
            return unaudited(e);
        }
        return password_page(
            &a,
            StatusCode::TOO_MANY_REQUESTS,
            Some(("Too many wrong passwords: try again later.", false)),
        );
    }
    let (all, name, current) = (c.users(), a.name.clone(), f.current);
    let right =
        tokio::task::spawn_blocking(move || users::authenticate(&all, &name, &current).is_some())
            .await
            .unwrap_or(false);
    if !right {
        lock(&c.throttle).failed(&a.name, &src, now);
        let q = serde_json::json!({ "reason": "wrong current password" });
        if let Err(e) = c
            .audit(&a.name, Some(a.role), a.source, "password-failed", q, 0)
            .await
        {
            return unaudited(e);
        }
        return password_page(
            &a,
            StatusCode::UNAUTHORIZED,
            Some(("The current password is wrong.", false)),
        );
    }
    if f.new != f.again {
        return password_page(
            &a,
            StatusCode::BAD_REQUEST,
            Some(("The new passwords differ.", false)),
        );
    }
    if let Err(e) = users::check_password(&f.new) {
        return password_page(&a, StatusCode::BAD_REQUEST, Some((&e, false)));
    }
    if let Err(e) = c
        .audit(
            &a.name,
            Some(a.role),
            a.source,
            "password",
            serde_json::Value::Null,
            0,
        )
        .await
    {
        return unaudited(e);
    }
    // One writer at a time here; `console user` on the command line writes the file whole too
    // (a rename), so a reader never sees half of either.
    let written = {
        let _one = c.users_write.lock().await;
        let (path, name, new) = (c.settings.users.clone(), a.name.clone(), f.new);
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let hash = users::hash_password(&new)?;
            let mut all = users::Users::load(&path, false).map_err(|e| e.to_string())?;
            let u = all
                .users
                .get_mut(&name)
                .ok_or_else(|| format!("user `{name}` is no longer in the users file"))?;
            u.password = hash;
            all.save(&path).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    };
    if let Err(e) = written {
        return internal(format!("password change of {}: {e}", a.name));
    }
    lock(&c.sessions).remove_user_except(&a.name, &a.sid);
    lock(&c.throttle).succeeded(&a.name);
    password_page(
        &a,
        StatusCode::OK,
        Some(("Password changed; your other sessions have ended.", true)),
    )
}

// ---- summary ----

async fn summary(State(c): State<Arc<Console>>, Authz(a, _): AdminPage) -> Response {
    if let Err(e) = c
        .audit(
            &a.name,
            Some(a.role),
            a.source,
            "summary",
            serde_json::Value::Null,
            0,
        )
        .await
    {
        return unaudited(e);
    }
    let c2 = c.clone();
    let facts = tokio::task::spawn_blocking(move || {
        let messages = c2
            .index()
            .and_then(|i| i.records())
            .map_err(|e| e.to_string());
        let (mut segments, mut bytes) = (0u64, 0u64);
        if let Ok(rd) = std::fs::read_dir(c2.journal_dir()) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".seg")
                    && let Ok(m) = e.metadata()
                {
                    segments += 1;
                    bytes += m.len();
                }
            }
        }
        let head = journal_head(&c2);
        (messages, segments, bytes, head)
    })
    .await;
    let Ok((messages, segments, bytes, head)) = facts else {
        return internal("the summary task failed");
    };
    let snap = c.store().snapshot();
    let s = &snap.policy.settings;
    let mut body = String::from("<table id=\"summary\">");
    let mut row = |k: &str, v: String| {
        let _ = write!(body, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    row(
        "Archived messages (indexed)",
        messages.map_or_else(|e| format!("unknown ({e})"), |n| n.to_string()),
    );
    row(
        "Accounts in the policy",
        snap.policy.accounts.len().to_string(),
    );
    row(
        "Archive",
        if s.archive_enabled {
            "on".into()
        } else {
            "off".into()
        },
    );
    row("Retention", format!("{} days", s.retention_days));
    row("Journal", format!("{bytes} bytes in {segments} segments"));
    row("Last record written", head.written.clone());
    row(
        "Journal head",
        format!("record ending at {}, hash {}", head.position, head.hash),
    );
    row("Newest archived message (indexed)", head.newest.clone());
    row("Index", head.lag.clone());
    body.push_str("</table><h2>Console users</h2><table id=\"users\"><tr><th>User</th><th>Role</th><th>Departments</th></tr>");
    for (name, u) in &c.users().users {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            u.role.as_str(),
            esc(&u.departments.join(", "))
        );
    }
    body.push_str("</table>");
    Html(html::page("Archive summary", Some(&a.viewer()), &body)).into_response()
}

/// The journal's head and the index's distance from it, for the summary.
struct JournalHead {
    /// Where the journal's durable records end (`segment-offset`).
    position: String,
    /// The hash of the record that ends there, hex (`archive verify` prints the same head).
    hash: String,
    /// When the head segment was last written: the last record's time.
    written: String,
    /// The time of the newest message in the index.
    newest: String,
    /// Up to date, or how many records and messages the index has still to read.
    lag: String,
}

/// The index reads at most this many records per summary to tell its lag; beyond, "more than".
const LAG_WALK: u64 = 10_000;

/// The journal's head without walking the journal: the position the journal's writer has made
/// durable and the hash stored just before it. The index's lag: the records between its
/// position and the head (read, at most [`LAG_WALK`]; none when it is up to date).
fn journal_head(c: &Console) -> JournalHead {
    use crate::journal::format::hex;
    use crate::journal::segment::{segment_path, stored_hash_before};
    let dir = c.journal_dir();
    let head = c.journal.durable().borrow().position;
    let hash = match stored_hash_before(dir, head) {
        Ok(Some(h)) => hex(&h),
        Ok(None) => "none (no record yet)".into(),
        Err(e) => format!("unknown ({e})"),
    };
    let written = std::fs::metadata(segment_path(dir, head.segment))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .map_or_else(
            || "unknown".into(),
            |t| t.round(jiff::Unit::Second).unwrap_or(t).to_string(),
        );
    let index = match c.index() {
        Ok(i) => i,
        Err(e) => {
            let unknown = format!("unknown ({e})");
            return JournalHead {
                position: head.to_string(),
                hash,
                written,
                newest: unknown.clone(),
                lag: unknown,
            };
        }
    };
    let newest = index
        .search(&Search {
            limit: 1,
            ..Search::all(search::Query::default())
        })
        .map_or_else(
            |e| format!("unknown ({e})"),
            |p| {
                p.hits
                    .first()
                    .map_or_else(|| "none".into(), |h| h.time.clone())
            },
        );
    let lag = match index.position() {
        Err(e) => format!("unknown ({e})"),
        Ok(at) if at >= head => "up to date".into(),
        Ok(at) => {
            let (mut records, mut messages, mut more) = (0u64, 0u64, false);
            for r in crate::journal::Records::from(dir, at) {
                let Ok(info) = r else { break };
                if (info.id.segment, info.id.offset) >= (head.segment, head.offset) {
                    break;
                }
                if records == LAG_WALK {
                    more = true;
                    break;
                }
                records += 1;
                messages += u64::from(info.header.kind.holds_message());
            }
            let more = if more { "more than " } else { "" };
            match messages {
                0 => format!(
                    "up to date: every message indexed ({more}{records} newer records, none a message)"
                ),
                n => format!(
                    "{more}{n} messages behind ({more}{records} records; the daemon's indexer is catching up)"
                ),
            }
        }
    };
    JournalHead {
        position: head.to_string(),
        hash,
        written,
        newest,
        lag,
    }
}

// ---- search ----

/// The search form's fields, as sent (all optional; checked in [`SearchParams::check`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    account: Option<String>,
    from: Option<String>,
    to: Option<String>,
    text: Option<String>,
    in_subject: Option<String>,
    in_body: Option<String>,
    in_attachment: Option<String>,
    since: Option<String>,
    until: Option<String>,
    department: Option<String>,
    sub: Option<String>,
    page: Option<usize>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl SearchParams {
    /// Whether the form was submitted at all (an empty form is shown without searching).
    fn submitted(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    /// The query, or why it is refused (400).
    fn check(&self) -> Result<(search::Query, bool, usize), String> {
        for v in [
            &self.account,
            &self.from,
            &self.to,
            &self.text,
            &self.department,
        ]
        .into_iter()
        .flatten()
        {
            if v.len() > MAX_FIELD {
                return Err(format!("a field is longer than {MAX_FIELD} bytes"));
            }
            if v.chars().any(char::is_control) {
                return Err("a field holds control characters".into());
            }
        }
        let date = |v: &Option<String>, name: &str| -> Result<jiff::civil::Date, String> {
            let text = nonempty(v)
                .ok_or_else(|| format!("the time range is required: `{name}` (YYYY-MM-DD)"))?;
            text.parse()
                .map_err(|_| format!("`{name}` is not a date (YYYY-MM-DD)"))
        };
        let since = date(&self.since, "since")?;
        let until = date(&self.until, "until")?;
        if until < since {
            return Err("`until` is before `since`".into());
        }
        let any_part =
            self.in_subject.is_some() || self.in_body.is_some() || self.in_attachment.is_some();
        let parts = match any_part {
            false => search::Parts::default(),
            true => search::Parts {
                subject: self.in_subject.is_some(),
                body: self.in_body.is_some(),
                attachment: self.in_attachment.is_some(),
            },
        };
        let page = self.page.unwrap_or(1);
        if page == 0 || page > MAX_PAGE {
            return Err(format!("`page` must be between 1 and {MAX_PAGE}"));
        }
        let q = search::Query {
            account: nonempty(&self.account),
            from: nonempty(&self.from),
            to: nonempty(&self.to),
            since: Some(since),
            until: Some(until),
            text: nonempty(&self.text)
                .map(|t| analysis::split_query(&t))
                .unwrap_or_default(),
            parts,
            department: nonempty(&self.department),
            exact_department: self.department.is_some() && self.sub.is_none(),
            folder: None,
        };
        Ok((q, self.sub.is_some(), page))
    }
}

/// Whether `dept` lies within the user's scope (none: everything).
fn in_scope(scope: &[String], dept: &str) -> bool {
    scope.is_empty()
        || scope
            .iter()
            .any(|s| analysis::department_matches(dept, s, false))
}

/// Runs a checked search for `a` (its scope applied), audited before the answer.
async fn run_search(
    c: &Arc<Console>,
    a: &Authed,
    p: &SearchParams,
    api: bool,
) -> Result<(search::Query, usize, crate::index::Page), Response> {
    let (q, _, page) = p.check().map_err(|e| bad_request(Some(a), &e, api))?;
    if let Some(d) = &q.department
        && !in_scope(&a.departments, d)
    {
        return Err(deny(c, a, "search", serde_json::json!({ "department": d }), api).await);
    }
    let s = Search {
        limit: PAGE_SIZE,
        offset: (page - 1) * PAGE_SIZE,
        scope: a.departments.clone(),
        ..Search::all(q.clone())
    };
    let c2 = c.clone();
    let result = tokio::task::spawn_blocking(move || c2.index().and_then(|i| i.search(&s))).await;
    let found = match result {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(internal(format!("search: {e}"))),
        Err(e) => return Err(internal(format!("search task: {e}"))),
    };
    let mut audited = serde_json::to_value(&q).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut audited {
        m.insert("page".into(), page.into());
        m.insert("total".into(), found.total.into());
    }
    if let Err(e) = c
        .audit(
            &a.name,
            Some(a.role),
            a.source,
            "search",
            audited,
            found.hits.len(),
        )
        .await
    {
        return Err(unaudited(e));
    }
    Ok((q, page, found))
}

async fn search_page(
    State(c): State<Arc<Console>>,
    Authz(a, _): AdminPage,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(p)) = params else {
        return bad_request(Some(&a), "unknown or malformed search parameters", false);
    };
    let mut body = search_form(&p, &a.departments);
    if p.submitted() {
        let (q, page, found) = match run_search(&c, &a, &p, false).await {
            Ok(r) => r,
            Err(r) => return r,
        };
        let _ = write!(body, "<p id=\"total\">{} messages</p>", found.total);
        body.push_str(
            "<table id=\"hits\"><tr><th></th><th>Time</th><th>From</th><th>To</th><th>Subject</th></tr>",
        );
        for h in &found.hits {
            let _ = write!(
                body,
                "<tr>{}<td>{}</td><td>{}</td><td>{}</td><td><a href=\"/message/{}\">{}</a></td></tr>",
                export::row_checkbox(&h.id),
                esc(&h.time),
                esc(if h.from.is_empty() { "<>" } else { &h.from }),
                esc(&h.to.join(", ")),
                url_param(&h.id),
                esc(if h.subject.is_empty() {
                    "(no subject)"
                } else {
                    &h.subject
                })
            );
        }
        body.push_str("</table>");
        let shown = (page - 1) * PAGE_SIZE + found.hits.len();
        let link = |n: usize| {
            let mut qs = String::new();
            for (k, v) in [
                ("account", &q.account),
                ("from", &q.from),
                ("to", &q.to),
                ("department", &q.department),
                ("text", &nonempty(&p.text)),
                ("since", &nonempty(&p.since)),
                ("until", &nonempty(&p.until)),
            ] {
                if let Some(v) = v {
                    let _ = write!(qs, "{k}={}&", url_param(v));
                }
            }
            for (k, on) in [
                ("in_subject", p.in_subject.is_some()),
                ("in_body", p.in_body.is_some()),
                ("in_attachment", p.in_attachment.is_some()),
                ("sub", p.sub.is_some()),
            ] {
                if on {
                    let _ = write!(qs, "{k}=on&");
                }
            }
            format!("/search?{qs}page={n}")
        };
        if page > 1 {
            let _ = write!(
                body,
                "<a id=\"prev\" href=\"{}\">Newer</a> ",
                esc(&link(page - 1))
            );
        }
        if shown < found.total && page < MAX_PAGE {
            let _ = write!(
                body,
                "<a id=\"next\" href=\"{}\">Older</a>",
                esc(&link(page + 1))
            );
        }
        body.push_str(&export::search_forms(&a.csrf, &p, found.total));
    }
    Html(html::page("Search", Some(&a.viewer()), &body)).into_response()
}

fn search_form(p: &SearchParams, scope: &[String]) -> String {
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or(""));
    let checked = |o: &Option<String>| if o.is_some() { " checked" } else { "" };
    let mut out = String::from("<form method=\"get\" action=\"/search\" id=\"search\">");
    let _ = write!(
        out,
        "<p><label>Account <input name=\"account\" value=\"{}\"></label>\
         <label>Sender <input name=\"from\" value=\"{}\"></label>\
         <label>Recipient <input name=\"to\" value=\"{}\"></label></p>\
         <p><label>Keywords <input name=\"text\" value=\"{}\"></label> in \
         <label><input type=\"checkbox\" name=\"in_subject\"{}> subject</label>\
         <label><input type=\"checkbox\" name=\"in_body\"{}> body</label>\
         <label><input type=\"checkbox\" name=\"in_attachment\"{}> attachments</label> (none: all three)</p>\
         <p><label>From date <input type=\"date\" name=\"since\" required value=\"{}\"></label>\
         <label>To date <input type=\"date\" name=\"until\" required value=\"{}\"></label></p>\
         <p><label>Department <input name=\"department\" value=\"{}\"></label>\
         <label><input type=\"checkbox\" name=\"sub\"{}> include sub-departments</label></p>",
        v(&p.account),
        v(&p.from),
        v(&p.to),
        v(&p.text),
        checked(&p.in_subject),
        checked(&p.in_body),
        checked(&p.in_attachment),
        v(&p.since),
        v(&p.until),
        v(&p.department),
        checked(&p.sub),
    );
    if !scope.is_empty() {
        let _ = write!(out, "<p>Your scope: {}</p>", esc(&scope.join(", ")));
    }
    out.push_str("<p><button type=\"submit\" id=\"go\">Search</button></p></form>");
    out
}

async fn api_search(
    State(c): State<Arc<Console>>,
    Authz(a, _): AdminApi,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(p)) = params else {
        return bad_request(Some(&a), "unknown or malformed search parameters", true);
    };
    match run_search(&c, &a, &p, true).await {
        Ok((_, page, found)) => axum::Json(serde_json::json!({
            "total": found.total, "page": page, "page_size": PAGE_SIZE, "hits": found.hits,
        }))
        .into_response(),
        Err(r) => r,
    }
}

// ---- one message ----

/// Reads a message for `a`: the id checked, the record read through the hash chain, the scope
/// checked (403, audited), then the access audited as `action`.
async fn read_message(
    c: &Arc<Console>,
    a: &Authed,
    id: &str,
    action: &str,
    api: bool,
) -> Result<(RecordId, MessageMeta, Vec<u8>), Response> {
    read_message_as(c, a, id, action, serde_json::Value::Null, api).await
}

/// [`read_message`], with `extra` fields (an object) in the audit record of the access.
async fn read_message_as(
    c: &Arc<Console>,
    a: &Authed,
    id: &str,
    action: &str,
    extra: serde_json::Value,
    api: bool,
) -> Result<(RecordId, MessageMeta, Vec<u8>), Response> {
    if a.role != Role::ArchiveAdmin {
        return Err(deny(
            c,
            a,
            action,
            serde_json::json!({ "id": id.chars().take(64).collect::<String>() }),
            api,
        )
        .await);
    }
    let Ok(rid) = id.parse::<RecordId>() else {
        return Err(bad_request(Some(a), "not a record id", api));
    };
    let dir = c.journal_dir().to_path_buf();
    let read = tokio::task::spawn_blocking(move || search::message_record(&dir, rid)).await;
    let (kind, meta, body) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(search::SearchError::NoSuchRecord(_) | search::SearchError::NotAMessage(_))) => {
            return Err(match api {
                true => (
                    StatusCode::NOT_FOUND,
                    axum::Json(serde_json::json!({"error": "no such message"})),
                )
                    .into_response(),
                false => (
                    StatusCode::NOT_FOUND,
                    Html(html::error(
                        Some(&a.viewer()),
                        "Not found",
                        "No such message.",
                    )),
                )
                    .into_response(),
            });
        }
        Ok(Err(e)) => return Err(internal(format!("message {rid}: {e}"))),
        Err(e) => return Err(internal(format!("message task: {e}"))),
    };
    let meta = message_of(kind, &meta).map(|m| m.0).unwrap_or_default();
    if !a.departments.is_empty() && !meta.departments.iter().any(|d| in_scope(&a.departments, d)) {
        return Err(deny(c, a, action, serde_json::json!({ "id": rid.to_string(), "reason": "outside the user's departments" }), api).await);
    }
    let mut audited = serde_json::json!({ "id": rid.to_string() });
    if let (serde_json::Value::Object(m), serde_json::Value::Object(x)) = (&mut audited, extra) {
        m.extend(x);
    }
    if let Err(e) = c
        .audit(&a.name, Some(a.role), a.source, action, audited, 1)
        .await
    {
        return Err(unaudited(e));
    }
    Ok((rid, meta, body))
}

async fn message_page(
    State(c): State<Arc<Console>>,
    Authz(a, _): AdminPage,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let (rid, meta, raw) = match read_message(&c, &a, &id, "view", false).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let body = render_message(rid, &meta, &raw);
    Html(html::page("Message", Some(&a.viewer()), &body)).into_response()
}

/// The HTML body of a message, without anything that runs or loads: no scripts, styles,
/// frames or forms, and no URL at all (links and images lose them), so a tracking pixel never
/// loads even before the CSP would stop it.
pub fn sanitize(html_body: &str) -> String {
    ammonia::Builder::default()
        .url_schemes(std::collections::HashSet::new())
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(html_body)
        .to_string()
}

fn render_message(rid: RecordId, meta: &MessageMeta, raw: &[u8]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<p class=\"ok\" id=\"integrity\">Record {}: its place in the journal's hash chain was verified.</p>\
         <p><a id=\"eml\" href=\"/message/{}/eml\">Download .eml</a></p><h2>Envelope</h2><table id=\"envelope\">",
        esc(&rid.to_string()),
        url_param(&rid.to_string())
    );
    let mut row = |k: &str, v: &str| {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    };
    row("Time", &meta.time);
    row(
        "Sender",
        if meta.sender.is_empty() {
            "<>"
        } else {
            &meta.sender
        },
    );
    for r in &meta.recipients {
        let became: Vec<&str> = meta.deliver_of(r).collect();
        row(
            "Recipient",
            &format!("{} ({}) → {}", r.address, r.rule, became.join(", ")),
        );
    }
    for r in &meta.refused {
        row("Refused", &format!("{} ({})", r.address, r.reply));
    }
    row("Final recipients", &meta.final_recipients.join(", "));
    row("Departments", &meta.departments.join(", "));
    out.push_str("</table>");
    let Some(m) = MessageParser::default().parse(raw) else {
        out.push_str("<p class=\"err\">The message does not parse as MIME.</p>");
        return out;
    };
    let _ = write!(
        out,
        "<h2>Subject</h2><p id=\"subject\">{}</p><h2>Headers</h2><table id=\"headers\">",
        esc(m.subject().unwrap_or(""))
    );
    for h in m.headers() {
        let value = raw
            .get(h.offset_start as usize..h.offset_end as usize)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(h.name.as_str()),
            esc(value.trim())
        );
    }
    out.push_str("</table>");
    if let Some(t) = m.body_text(0) {
        let _ = write!(out, "<h2>Text</h2><pre id=\"text\">{}</pre>", esc(&t));
    }
    if let Some(part) = m.parts.iter().find(|p| matches!(p.body, PartType::Html(_)))
        && let PartType::Html(h) = &part.body
    {
        let _ = write!(
            out,
            "<h2>HTML (sanitized)</h2><div class=\"html\" id=\"html\">{}</div>",
            sanitize(h)
        );
    }
    let attachments: Vec<_> = m.attachments().collect();
    if !attachments.is_empty() {
        out.push_str("<h2>Attachments</h2><table id=\"attachments\"><tr><th>Name</th><th>Type</th><th>Size</th><th></th></tr>");
        for (n, a) in attachments.into_iter().enumerate() {
            let ct = a.content_type().map(|c| match &c.c_subtype {
                Some(s) => format!("{}/{}", c.c_type, s),
                None => c.c_type.to_string(),
            });
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{} bytes</td>\
                 <td><a class=\"attachment\" href=\"/message/{}/attachment/{n}\">Download</a></td></tr>",
                esc(a.attachment_name().unwrap_or("(unnamed)")),
                esc(ct.as_deref().unwrap_or("")),
                a.contents().len(),
                url_param(&rid.to_string()),
            );
        }
        out.push_str("</table>");
    }
    out
}

async fn download(
    State(c): State<Arc<Console>>,
    Authz(a, _): AdminPage,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match read_message(&c, &a, &id, "download", false).await {
        // The id is digits and a dash: safe in the quoted file name.
        Ok((rid, _, raw)) => (
            [
                (header::CONTENT_TYPE, "message/rfc822".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{rid}.eml\""),
                ),
            ],
            raw,
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn api_message(
    State(c): State<Arc<Console>>,
    Authz(a, _): AdminApi,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let (rid, meta, raw) = match read_message(&c, &a, &id, "view", true).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let m = MessageParser::default().parse(&raw);
    let subject = m
        .as_ref()
        .and_then(|m| m.subject())
        .unwrap_or("")
        .to_string();
    let text = m
        .as_ref()
        .and_then(|m| m.body_text(0))
        .map(|t| t.into_owned());
    let attachments: Vec<_> = m
        .iter()
        .flat_map(|m| m.attachments())
        .map(|a| serde_json::json!({ "name": a.attachment_name(), "size": a.contents().len() }))
        .collect();
    axum::Json(serde_json::json!({
        "id": rid.to_string(), "envelope": meta, "subject": subject, "text": text,
        "attachments": attachments, "size": raw.len(),
    }))
    .into_response()
}

// ---- the audit log ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    user: Option<String>,
    since: Option<String>,
    until: Option<String>,
    command: Option<String>,
    keyword: Option<String>,
    /// `csv`: the same entries as a CSV download.
    format: Option<String>,
}

async fn audit_page(
    State(c): State<Arc<Console>>,
    Authz(a, _): AuditorPage,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(p)) = params else {
        return bad_request(Some(&a), "unknown or malformed parameters", false);
    };
    for v in [&p.user, &p.since, &p.until, &p.command, &p.keyword]
        .into_iter()
        .flatten()
    {
        if v.len() > MAX_FIELD || v.chars().any(char::is_control) {
            return bad_request(
                Some(&a),
                "a field is too long or holds control characters",
                false,
            );
        }
    }
    let date = |v: &Option<String>| -> Result<Option<jiff::civil::Date>, ()> {
        nonempty(v).map(|t| t.parse().map_err(|_| ())).transpose()
    };
    let (Ok(since), Ok(until)) = (date(&p.since), date(&p.until)) else {
        return bad_request(Some(&a), "a date is not YYYY-MM-DD", false);
    };
    let filter = crate::journal::audit::AuditFilter {
        user: nonempty(&p.user),
        since,
        until,
        command: nonempty(&p.command),
    };
    let keyword = nonempty(&p.keyword).map(|k| k.to_lowercase());
    let dir = c.journal_dir().to_path_buf();
    let f2 = filter.clone();
    let read = tokio::task::spawn_blocking(move || crate::journal::audit::trail(&dir, &f2)).await;
    let mut entries = match read {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return internal(format!("audit trail: {e}")),
        Err(e) => return internal(format!("audit task: {e}")),
    };
    if let Some(k) = &keyword {
        entries.retain(|e| {
            e.user.to_lowercase().contains(k)
                || e.command.to_lowercase().contains(k)
                || e.query.to_string().to_lowercase().contains(k)
        });
    }
    let csv = match p.format.as_deref() {
        None | Some("") | Some("html") => false,
        Some("csv") => true,
        Some(_) => return bad_request(Some(&a), "`format` is html or csv", false),
    };
    let q = serde_json::json!({ "filter": filter, "keyword": keyword });
    let action = if csv { "audit-download" } else { "audit" };
    if let Err(e) = c
        .audit(&a.name, Some(a.role), a.source, action, q, entries.len())
        .await
    {
        return unaudited(e);
    }
    if csv {
        return match audit_csv(&entries) {
            Ok(bytes) => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"handoff-audit.csv\"",
                    ),
                ],
                bytes,
            )
                .into_response(),
            Err(e) => internal(format!("audit CSV: {e}")),
        };
    }
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or(""));
    let mut body = format!(
        "<form method=\"get\" action=\"/audit\"><p><label>User <input name=\"user\" value=\"{}\"></label>\
         <label>Action <input name=\"command\" value=\"{}\"></label><label>Keyword <input name=\"keyword\" value=\"{}\"></label></p>\
         <p><label>From date <input type=\"date\" name=\"since\" value=\"{}\"></label><label>To date <input type=\"date\" name=\"until\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button></p></form><p id=\"count\">{} records (newest first)</p>\
         <table id=\"audit\"><tr><th>Time</th><th>User</th><th>Action</th><th>Hits</th><th>Details</th></tr>",
        v(&p.user),
        v(&p.command),
        v(&p.keyword),
        v(&p.since),
        v(&p.until),
        entries.len()
    );
    for e in entries.iter().rev().take(1000) {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.time),
            esc(&e.user),
            esc(&e.command),
            e.hits,
            esc(&e.query.to_string())
        );
    }
    body.push_str("</table>");
    let mut qs = String::new();
    for (k, v) in [
        ("user", &p.user),
        ("command", &p.command),
        ("keyword", &p.keyword),
        ("since", &p.since),
        ("until", &p.until),
    ] {
        if let Some(v) = nonempty(v) {
            let _ = write!(qs, "{k}={}&", url_param(&v));
        }
    }
    let _ = write!(
        body,
        "<p><a id=\"csv\" href=\"/audit?{}format=csv\">Download as CSV</a> (oldest first)</p>",
        esc(&qs)
    );
    Html(html::page("Audit log", Some(&a.viewer()), &body)).into_response()
}

/// The audit entries as CSV, oldest first. A cell that a spreadsheet would take for a formula
/// (`=`, `+`, `-`, `@`, tab, CR at its start: OWASP's CSV injection advice) gets a leading `'`:
/// the user names and queries are what people typed.
fn audit_csv(entries: &[crate::journal::audit::AuditEntry]) -> Result<Vec<u8>, csv::Error> {
    let cell = |s: &str| -> String {
        match s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            true => format!("'{s}"),
            false => s.to_string(),
        }
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["id", "time", "user", "action", "hits", "details"])?;
    for e in entries {
        w.write_record([
            e.id.clone(),
            cell(&e.time),
            cell(&e.user),
            cell(&e.command),
            e.hits.to_string(),
            cell(&e.query.to_string()),
        ])?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_html_body_keeps_no_script_style_or_url() {
        let dirty = "<p onclick=\"x()\">Hi<script>alert(1)</script></p>\
                     <img src=\"https://tracker.example/p.gif\"><a href=\"https://evil.example/\">link</a>\
                     <style>body{}</style><iframe src=\"https://x.example\"></iframe>\
                     <img src=\"data:image/png;base64,AAAA\"><a href=\"javascript:alert(1)\">j</a>";
        let clean = sanitize(dirty);
        for gone in [
            "script",
            "onclick",
            "tracker",
            "evil",
            "style",
            "iframe",
            "data:",
            "javascript",
        ] {
            assert!(!clean.contains(gone), "{gone} in {clean}");
        }
        assert!(clean.contains("Hi") && clean.contains("link"), "{clean}");
    }

    #[test]
    fn the_audit_csv_defuses_formulas() {
        let e = |user: &str| crate::journal::audit::AuditEntry {
            id: "1-0".into(),
            time: "2026-01-01T00:00:00Z".into(),
            user: user.into(),
            command: "console+login-failed".into(),
            query: serde_json::json!({ "source": "127.0.0.1" }),
            hits: 0,
        };
        let out = String::from_utf8(
            audit_csv(&[e("console:=HYPERLINK(\"x\")"), e("console:bob")]).unwrap(),
        )
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "id,time,user,action,hits,details");
        assert!(
            lines[1].starts_with(
                "1-0,2026-01-01T00:00:00Z,\"console:=HYPERLINK(\"\"x\"\")\",console+login-failed,0,"
            ),
            "{out}"
        );
        assert_eq!(
            audit_csv(&[e("=cmd")])
                .map(|b| String::from_utf8(b).unwrap())
                .unwrap()
                .lines()
                .nth(1)
                .unwrap()
                .split(',')
                .nth(2)
                .unwrap(),
            "'=cmd"
        );
    }

    #[test]
    fn search_parameters_are_checked() {
        let ok = SearchParams {
            since: Some("2026-01-01".into()),
            until: Some("2026-01-31".into()),
            department: Some("sales".into()),
            sub: Some("on".into()),
            in_subject: Some("on".into()),
            text: Some("invoice \"final notice\"".into()),
            ..SearchParams::default()
        };
        let (q, sub, page) = ok.check().unwrap();
        assert!(sub && !q.exact_department && page == 1);
        assert_eq!(q.text, ["invoice", "final notice"]);
        assert!(q.parts.subject && !q.parts.body);
        let cases: Vec<(SearchParams, &str)> = vec![
            (SearchParams::default(), "time range is required"),
            (
                SearchParams {
                    since: Some("2026-01-01".into()),
                    ..SearchParams::default()
                },
                "`until`",
            ),
            (
                SearchParams {
                    since: Some("x".into()),
                    until: Some("2026-01-01".into()),
                    ..SearchParams::default()
                },
                "not a date",
            ),
            (
                SearchParams {
                    since: Some("2026-02-01".into()),
                    until: Some("2026-01-01".into()),
                    ..SearchParams::default()
                },
                "before",
            ),
            (
                SearchParams {
                    page: Some(0),
                    ..ok_dates()
                },
                "page",
            ),
            (
                SearchParams {
                    page: Some(MAX_PAGE + 1),
                    ..ok_dates()
                },
                "page",
            ),
            (
                SearchParams {
                    from: Some("a".repeat(MAX_FIELD + 1)),
                    ..ok_dates()
                },
                "longer",
            ),
            (
                SearchParams {
                    text: Some("a\u{0}b".into()),
                    ..ok_dates()
                },
                "control",
            ),
        ];
        for (p, want) in cases {
            let e = p.check().unwrap_err();
            assert!(e.contains(want), "{p:?}: {e}");
        }
        assert!(in_scope(&[], "hr"));
        assert!(in_scope(&["sales".into()], "Sales/EMEA"));
        assert!(!in_scope(&["sales".into()], "salesforce"));
        assert!(!in_scope(&["sales/emea".into()], "sales"));
    }

    fn ok_dates() -> SearchParams {
        SearchParams {
            since: Some("2026-01-01".into()),
            until: Some("2026-01-02".into()),
            ..SearchParams::default()
        }
    }

    #[test]
    fn the_session_cookie_is_read_only_when_well_formed() {
        let id = "ab".repeat(32);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("x=1; {COOKIE}={id}; y=2").parse().unwrap(),
        );
        assert_eq!(session_id(&h), Some(id));
        h.insert(
            header::COOKIE,
            format!("{COOKIE}=../../etc").parse().unwrap(),
        );
        assert_eq!(session_id(&h), None);
        assert!(cookie("x").contains("HttpOnly; Secure; SameSite=Strict"));
    }
}

//! The console's request guard, in front of every route: the Host check (DNS rebinding), the admin
//! token on every state-changing request, the same-origin / CSRF checks for cookie sessions, and the
//! security headers of every answer.
//!
//! Reads (GET) need no login: the console listens on loopback by default. A POST needs the admin token,
//! either as `Authorization: Bearer TOKEN` (scripts, curl) or as the `segnode_admin` cookie the login
//! form sets (HttpOnly, SameSite=Strict) together with the page's CSRF token in `X-CSRF-Token`, and a
//! browser's Origin / Sec-Fetch-Site must be this console. `/health` and `/metrics` answer any Host (they
//! carry no patient data; Prometheus scrapes them by service name).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::state::Console;

/// The login cookie's name.
pub const COOKIE: &str = "segnode_admin";

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ForeignHost,
    CrossOrigin,
    NoToken,
    WrongToken,
    NoCsrf,
}

impl Refusal {
    fn answer(self) -> Response {
        let (code, text) = match self {
            Refusal::ForeignHost => (
                StatusCode::FORBIDDEN,
                "refused: the Host header does not name this console (add it to http.allowed_hosts)\n",
            ),
            Refusal::CrossOrigin => (StatusCode::FORBIDDEN, "refused: cross-origin request\n"),
            Refusal::NoToken => (
                StatusCode::UNAUTHORIZED,
                "this action needs the admin token (Authorization: Bearer …, or log in at /login)\n",
            ),
            Refusal::WrongToken => (StatusCode::FORBIDDEN, "refused: wrong admin token\n"),
            Refusal::NoCsrf => (
                StatusCode::FORBIDDEN,
                "refused: missing or wrong X-CSRF-Token\n",
            ),
        };
        let mut r = (code, text).into_response();
        if self == Refusal::NoToken {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The value of cookie `name`.
pub fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a request with these headers is an authenticated admin (Bearer, or cookie + CSRF).
pub fn check_admin(c: &Console, h: &HeaderMap) -> Result<(), Refusal> {
    let Some(token) = &c.token else {
        return Err(Refusal::NoToken);
    };
    if let Some(auth) = header_str(h, header::AUTHORIZATION) {
        let given = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .unwrap_or("");
        return if token.verify(given) {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        };
    }
    let Some(given) = cookie(h, COOKIE) else {
        return Err(Refusal::NoToken);
    };
    if !token.verify(given) {
        return Err(Refusal::WrongToken);
    }
    // a cookie is sent by the browser on its own: the page's CSRF token proves the page sent it
    let csrf = h.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if csrf.is_some_and(|t| t.as_bytes() == c.csrf.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::NoCsrf)
    }
}

/// A browser's cross-site request: an Origin that is not this Host, or Sec-Fetch-Site cross-site.
fn cross_origin(h: &HeaderMap, host: &str) -> bool {
    if let Some(origin) = header_str(h, header::ORIGIN) {
        let o = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or(origin);
        if !o.eq_ignore_ascii_case(host) {
            return true;
        }
    }
    matches!(
        h.get("sec-fetch-site").and_then(|v| v.to_str().ok()),
        Some("cross-site")
    )
}

/// The middleware.
pub async fn guard(State(c): State<Console>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = path == "/health" || path == "/metrics";
    let host = header_str(req.headers(), header::HOST)
        .unwrap_or("")
        .to_string();
    if !open && !c.host_allowed(&host) {
        return secure(Refusal::ForeignHost.answer());
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes {
        if cross_origin(req.headers(), &host) {
            return secure(Refusal::CrossOrigin.answer());
        }
        // the login form checks the token itself; the rule tester changes nothing (a POST because it
        // uploads a file)
        if !matches!(path, "/login" | "/logout" | "/api/rules/test") {
            if let Err(r) = check_admin(&c, req.headers()) {
                return secure(r.answer());
            }
        }
    }
    secure(next.run(req).await)
}

/// The security headers of every answer; `no-store` unless the handler set a cache policy (embedded
/// assets).
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

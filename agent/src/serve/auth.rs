//! Bearer-token authentication of HTTP callers: Alertmanager on `/v1/alerts`, and in cluster mode
//! the leader on `/v1/load` and anyone on `/v1/decisions`.
//!
//! For /v1/load the choice is one token shared by all agents, from a Secret mounted as a file
//! (`--load-token-file`), rather than the leader's service-account token checked with a
//! TokenReview: a shared token costs no API call per scrape (a TokenReview per request would put
//! N calls per round on the API server and every answer behind its availability), keeps working
//! while the API server is slow or partitioned away, and is rotated by updating the Secret: the
//! kubelet refreshes the mounted file and [`TokenFile`] reads it again on every request, so no
//! restart is needed.
//!
//! The token comes from a file (a mounted Secret) with surrounding whitespace trimmed, so a
//! trailing newline from `echo` or an editor does not lock everyone out. The comparison takes
//! the same time wherever the first differing byte is (`subtle`), so the token cannot be
//! guessed byte by byte from response times; its length is not hidden (the deployment's tokens
//! all have the same, public, length: 64 hex digits).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use subtle::ConstantTimeEq;

use super::api::ErrorBody;

/// A shared secret the caller presents as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct BearerToken(Vec<u8>);

/// Never printed: a token in a log is a leaked token.
impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}: {source}; mount the Secret there or fix the path")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the token file {path} is empty (after trimming whitespace); write a token into it, e.g. `openssl rand -hex 32`")]
    Empty { path: String },
    #[error("the token in {path} has characters an HTTP header cannot carry; use printable ASCII, e.g. `openssl rand -hex 32`")]
    NotHeaderSafe { path: String },
}

/// Why a request is not authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A bearer token that is not the configured one.
    Invalid,
}

impl AuthError {
    /// Says what to fix, without hinting at the token.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "authentication required: send `Authorization: Bearer <token>` (Alertmanager: http_config.authorization.credentials_file)",
            AuthError::Invalid => "the bearer token is not the one this agent was started with; check the Secret both sides mount",
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750 section 3).
    pub fn challenge(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            AuthError::Missing => "Bearer realm=\"ballast\"",
            AuthError::Invalid => "Bearer realm=\"ballast\", error=\"invalid_token\"",
        })
    }
}

impl BearerToken {
    /// Reads and trims the token file.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| TokenError::Read {
            path: source.clone(),
            source: error,
        })?;
        Self::from_text(&text, source)
    }

    /// The token in `text` (trimmed); `source` names where it came from in errors.
    pub fn from_text(text: &str, source: String) -> Result<Self, TokenError> {
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty { path: source });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotHeaderSafe { path: source });
        }
        Ok(Self(token.as_bytes().to_vec()))
    }

    /// Checks the request's `Authorization` header.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| bearer(value.as_bytes()))
            .ok_or(AuthError::Missing)?;
        if self.matches(presented) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }

    /// `Bearer <token>`, for a client presenting it (marked sensitive: never logged by hyper).
    pub fn authorization(&self) -> HeaderValue {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&self.0);
        // The token is printable ASCII (checked when read), so this cannot fail.
        let mut value =
            HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static(""));
        value.set_sensitive(true);
        value
    }

    /// Constant time in the position of the first difference (`subtle` compares every byte).
    fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_slice().ct_eq(presented))
    }
}

/// The credentials of `Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// A token file read again on every use, so that a rotated Secret takes effect without a
/// restart (`--load-token-file`).
#[derive(Clone, Debug)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// Checks now that the file holds a usable token, so that a bad mount fails at start.
    pub fn open(path: &Path) -> Result<Self, TokenError> {
        BearerToken::from_file(path)?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// The token the file holds now.
    pub fn read(&self) -> Result<BearerToken, TokenError> {
        BearerToken::from_file(&self.path)
    }
}

fn refuse(status: StatusCode, error: &str, challenge: Option<HeaderValue>) -> Response {
    let mut response = (
        status,
        Json(ErrorBody {
            error: error.to_owned(),
        }),
    )
        .into_response();
    if let Some(challenge) = challenge {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// Middleware: 401 without the file's token; 503 (fail closed) when the file cannot be read.
pub async fn require_token(
    State(file): State<TokenFile>,
    request: Request,
    next: Next,
) -> Response {
    let token = match file.read() {
        Ok(token) => token,
        Err(error) => {
            tracing::error!(%error, "refusing an authenticated request: no token to compare with");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "this agent cannot read its token file; see its log",
                None,
            );
        }
    };
    match token.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(why) => refuse(
            StatusCode::UNAUTHORIZED,
            match why {
                AuthError::Missing => "authentication required: send `Authorization: Bearer <token>` with the agents' shared token (the ballast Secret)",
                AuthError::Invalid => "the bearer token is not the agents' shared token; check the Secret both sides mount",
            },
            Some(why.challenge()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(authorization) {
            headers.insert(header::AUTHORIZATION, value);
        }
        headers
    }

    fn token(text: &str) -> BearerToken {
        BearerToken::from_text(text, "test".into()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_right_token_passes_and_the_scheme_is_case_insensitive() {
        let t = token("s3cret");
        assert_eq!(t.check(&headers("Bearer s3cret")), Ok(()));
        assert_eq!(t.check(&headers("bearer s3cret")), Ok(()));
        assert_eq!(t.check(&headers("BEARER   s3cret ")), Ok(()));
    }

    #[test]
    fn a_missing_header_or_another_scheme_is_missing() {
        let t = token("s3cret");
        assert_eq!(t.check(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(t.check(&headers("Basic czNjcmV0")), Err(AuthError::Missing));
        assert_eq!(t.check(&headers("Bearer ")), Err(AuthError::Missing));
        assert_eq!(t.check(&headers("Bearer")), Err(AuthError::Missing));
        assert_eq!(t.check(&headers("s3cret")), Err(AuthError::Missing));
    }

    #[test]
    fn a_wrong_token_is_invalid_whatever_its_length_or_prefix() {
        let t = token("s3cret");
        for wrong in [
            "s3cre",
            "s3crett",
            "s3creT",
            "x3cret",
            "S3CRET",
            "s3cret s3cret",
        ] {
            assert_eq!(
                t.check(&headers(&format!("Bearer {wrong}"))),
                Err(AuthError::Invalid),
                "{wrong}"
            );
        }
    }

    #[test]
    fn the_file_is_trimmed_and_must_hold_a_usable_token() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("alerts-token");
        std::fs::write(&path, "  abc123\n")?;
        let t = BearerToken::from_file(&path)?;
        assert_eq!(t.check(&headers("Bearer abc123")), Ok(()));
        assert_eq!(format!("{t:?}"), "BearerToken(<redacted>)");

        std::fs::write(&path, "\n \t\n")?;
        let err = BearerToken::from_file(&path).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("is empty")),
            "{err:?}"
        );
        std::fs::write(&path, "two words")?;
        let err = BearerToken::from_file(&path).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("printable ASCII")),
            "{err:?}"
        );
        let err = BearerToken::from_file(&dir.path().join("absent")).err();
        assert!(matches!(err, Some(TokenError::Read { .. })), "{err:?}");
        Ok(())
    }

    #[test]
    fn a_token_file_is_read_again_and_presented_as_a_bearer_header(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n")?;
        let file = TokenFile::open(&path)?;
        let first = file.read()?;
        assert_eq!(first.check(&headers("Bearer first")), Ok(()));
        assert_eq!(first.authorization(), "Bearer first");
        assert!(first.authorization().is_sensitive());
        std::fs::write(&path, "second")?;
        assert_eq!(
            file.read()?.check(&headers("Bearer second")),
            Ok(()),
            "read again"
        );
        std::fs::write(&path, " \n")?;
        assert!(matches!(file.read(), Err(TokenError::Empty { .. })));
        assert!(matches!(
            TokenFile::open(&dir.path().join("absent")),
            Err(TokenError::Read { .. })
        ));
        Ok(())
    }
}

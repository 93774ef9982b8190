//! Bearer-token authentication of /v1/load and /v1/decisions in cluster mode.
//!
//! The choice: one token shared by all agents, from a Secret mounted as a file
//! (`--load-token-file`), rather than the leader's service-account token checked with a
//! TokenReview. A shared token costs no API call per scrape (a TokenReview per request would
//! put every agent's answers behind the API server's availability and add N calls per round),
//! keeps working when the API server is slow or partitioned away, and is rotated by updating the
//! Secret: the kubelet refreshes the mounted file and the file is read again on every request,
//! so no restart is needed. The comparison is constant-time; the token never appears in logs.

use std::path::{Path, PathBuf};

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use subtle::ConstantTimeEq;

use super::api::ErrorBody;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}: {source}; mount the Secret there or fix --load-token-file")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {0} is empty; put the shared token in the Secret")]
    Empty(PathBuf),
}

/// The shared token's file, read again on every use so that a rotated Secret takes effect.
#[derive(Clone, Debug)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// Checks now that the file holds a token, so that a bad mount fails at start.
    pub fn open(path: &Path) -> Result<Self, TokenError> {
        let file = Self {
            path: path.to_owned(),
        };
        file.read()?;
        Ok(file)
    }

    /// The token: the file's content without surrounding whitespace (Secrets made with
    /// `echo` end in a newline).
    pub fn read(&self) -> Result<String, TokenError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| TokenError::Read {
            path: self.path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty(self.path.clone()));
        }
        Ok(token.to_owned())
    }
}

/// Whether `authorization` is `Bearer <token>`. Constant-time in the token's content.
pub fn authorized(authorization: Option<&[u8]>, token: &str) -> bool {
    let Some(presented) = authorization.and_then(|value| value.strip_prefix(b"Bearer ")) else {
        return false;
    };
    bool::from(presented.ct_eq(token.as_bytes()))
}

fn refuse(status: StatusCode, error: &str) -> Response {
    let mut response = (
        status,
        Json(ErrorBody {
            error: error.to_owned(),
        }),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// Middleware: 401 without the right token; 503 (fail closed) when the token file cannot be read.
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
            );
        }
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    if !authorized(presented, &token) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (the shared token from the ballast Secret)",
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = "s3cret-token";
        assert!(authorized(Some(b"Bearer s3cret-token"), token));
        for wrong in [
            &b"Bearer s3cret-tokeN"[..],
            b"Bearer s3cret-token ",
            b"Bearer s3cret",
            b"Bearer ",
            b"bearer s3cret-token",
            b"Basic s3cret-token",
            b"s3cret-token",
            b"",
        ] {
            assert!(
                !authorized(Some(wrong), token),
                "{:?}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(!authorized(None, token));
    }

    #[test]
    fn the_token_file_is_trimmed_reread_and_must_not_be_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").expect("written");
        let file = TokenFile::open(&path).expect("readable");
        assert_eq!(file.read().ok().as_deref(), Some("first"));
        std::fs::write(&path, "second").expect("rotated");
        assert_eq!(file.read().ok().as_deref(), Some("second"), "read again");
        std::fs::write(&path, " \n").expect("emptied");
        assert!(matches!(file.read(), Err(TokenError::Empty(_))));
        let missing = TokenFile::open(&dir.path().join("absent"));
        let message = missing.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("--load-token-file"), "{message}");
    }
}

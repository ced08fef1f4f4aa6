//! Routes that serve files (`static = "DIR"` on a `/prefix/*` route), with
//! tower-http's `ServeDir`: index files, `Range`, `If-None-Match` /
//! `If-Modified-Since` against its ETag and `Last-Modified`, the
//! precompressed `.br`, `.zst` and `.gz` variants a client accepts when they
//! exist, content types by extension; no directory listing.
//!
//! Invariant: nothing outside DIR is ever served. `ServeDir` refuses `..`
//! and absolute components (raw or percent-encoded); what it does not check,
//! a symlink inside DIR that leads out of it, is refused here before it is
//! asked (404, as if the file were not there).

use std::path::{Component, Path, PathBuf};

use http::{Request, Response, Uri};
use tower_http::services::ServeDir;

use crate::http::body::ResponseBody;
use crate::http::error::GatewayError;

/// Serves `request` from `root` for a route whose path is `prefix/*`.
pub async fn serve<B>(
    root: &Path,
    prefix: &str,
    request: Request<B>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let (mut parts, _body) = request.into_parts();
    let path = parts.uri.path();
    let inside = path.strip_prefix(prefix).unwrap_or(path);
    let inside = if inside.starts_with('/') {
        inside.to_string()
    } else {
        format!("/{inside}")
    };
    if escapes(root, &inside) {
        tracing::debug!(path, root = %root.display(), "a link leads out of the static root");
        return Err(GatewayError::NoRoute);
    }
    let rewritten = match parts.uri.query() {
        Some(query) => format!("{inside}?{query}"),
        None => inside,
    };
    parts.uri = rewritten
        .parse::<Uri>()
        .map_err(|_| GatewayError::BadRequest("the path is not a valid URI".into()))?;
    let request = Request::from_parts(parts, http_body_util::Empty::<bytes::Bytes>::new());
    let mut files = ServeDir::new(root)
        .precompressed_br()
        .precompressed_zstd()
        .precompressed_gzip()
        // A directory without its trailing slash is redirected to the
        // client's own path, prefix included.
        .redirect_path_prefix(prefix);
    let response = files.try_call(request).await.map_err(|error| {
        // What is not there (or not a file where a directory was asked
        // for) is a 404; anything else the operator must see.
        match error.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
                GatewayError::NoRoute
            }
            _ => GatewayError::Internal(format!("reading a static file: {error}")),
        }
    })?;
    Ok(response.map(crate::http::body::boxed))
}

/// Whether the file `inside` names under `root` (or, for a directory, its
/// `index.html`) is a link that leads out of `root`, which the config
/// check made canonical (so only the file's path is resolved here). Paths `ServeDir`
/// refuses anyway (`..`, undecodable) are left to it.
fn escapes(root: &Path, inside: &str) -> bool {
    let Ok(decoded) = percent_encoding::percent_decode_str(inside).decode_utf8() else {
        return false;
    };
    let mut candidate = root.to_path_buf();
    for component in Path::new(decoded.as_ref()).components() {
        match component {
            Component::Normal(part) => candidate.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return false,
        }
    }
    let outside = |path: &PathBuf| {
        path.canonicalize()
            .is_ok_and(|real| !real.starts_with(root))
    };
    outside(&candidate) || (candidate.is_dir() && outside(&candidate.join("index.html")))
}

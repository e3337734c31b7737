//! The web pages Confab serves itself, and the security headers every response carries.
//!
//! Two pages: the chat page at `/` (from `playground/`) and GraphiQL at `GET /graphql` for a
//! browser. Both, with every script and stylesheet they load, are compiled into the binary, so
//! they work offline and load nothing from another host. That is what lets one strict
//! Content-Security-Policy cover both pages (see [`headers`]): scripts and styles come from
//! Confab's own origin or not at all.
//!
//! Each static file says how long it may be cached: the pages and Confab's own scripts are
//! revalidated on every load (they change with the binary), the third-party GraphiQL files are
//! cached for a year (their URL names their version). Anything that does not say, which is
//! every API answer, is never stored (see [`headers`]).

mod graphiql;
mod headers;

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

pub use graphiql::graphiql_page;
pub use headers::{SecurityHeadersLayer, security_headers_layer};

/// The routes of the pages and their files: `/`, `/playground/…` and `/graphiql/…`.
///
/// GraphiQL's page itself is answered by `GET /graphql` (see [`graphiql_page`]).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let router = Router::new()
        .route("/", get(chat_page))
        .route("/playground/app.js", get(chat_script))
        .route("/playground/style.css", get(chat_style));
    graphiql::routes(router)
}

// The chat page is compiled in, so the binary serves it offline with no build step.
async fn chat_page() -> Response {
    static_file(
        HTML,
        Caching::Revalidate,
        include_bytes!("../../playground/index.html"),
    )
}

async fn chat_script() -> Response {
    static_file(
        JAVASCRIPT,
        Caching::Revalidate,
        include_bytes!("../../playground/app.js"),
    )
}

async fn chat_style() -> Response {
    static_file(
        CSS,
        Caching::Revalidate,
        include_bytes!("../../playground/style.css"),
    )
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// How long a browser may keep a static file.
#[derive(Clone, Copy, Debug)]
enum Caching {
    /// Changes with the binary: ask again on every use.
    Revalidate,
    /// Its URL changes whenever its bytes do: keep it for a year, never ask again.
    Immutable,
}

impl Caching {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Caching::Revalidate => "no-cache",
            Caching::Immutable => "public, max-age=31536000, immutable",
        })
    }
}

/// A file compiled into the binary, with its type and how long it may be cached.
fn static_file(content_type: &'static str, caching: Caching, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, caching.header()),
        ],
        body,
    )
        .into_response()
}

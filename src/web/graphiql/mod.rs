//! GraphiQL, served whole by Confab: the page, its start-up script and the pinned third-party
//! files it runs on, all compiled in (see `vendor/README.md` for where each file comes from).
//!
//! Third-party files are served under `/graphiql/<package>@<version>/<file>`: the URL changes
//! whenever the bytes do, so browsers may keep them for a year. The page's own script and
//! stylesheet are files too (`/graphiql/page.js`, `/graphiql/page.css`), never inline, so the
//! page runs under `script-src 'self'` with no exception.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::{CSS, Caching, HTML, JAVASCRIPT, TEXT, headers::InlineStyles, static_file};

/// `GET /graphql` for a browser: the GraphiQL page.
///
/// The same URL answers GraphQL GET requests, so the page says it varies with `Accept`.
pub fn graphiql_page() -> Response {
    let nonce = style_nonce();
    let page = PAGE.replacen(NONCE_SLOT, &nonce, 1);
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(HTML)),
            (header::CACHE_CONTROL, Caching::Revalidate.header()),
            (header::VARY, HeaderValue::from_static("accept")),
        ],
        page,
    )
        .into_response();
    response.extensions_mut().insert(InlineStyles {
        nonce,
        attribute_hashes: STYLE_ATTRIBUTE_HASHES,
    });
    response
}

const PAGE: &str = include_str!("page.html");
/// Where the page carries its nonce, for `page.js` to hand to GraphiQL.
const NONCE_SLOT: &str = "STYLE_NONCE";

/// GraphiQL needs two kinds of inline style, both on this page only:
/// - its dialogs (settings, keyboard shortcuts) add a `<style>` element that stops the page
///   scrolling behind them; it carries the nonce `page.js` hands over;
/// - CodeMirror's jump-to-line box (Alt-G) is HTML with two `style` attributes,
///   `width: 10em` and `color: #888`, allowed by their hashes. A test checks the bundle holds
///   exactly these texts.
const STYLE_ATTRIBUTE_HASHES: &[&str] = &[
    "sha256-H22cvujYHDQPJvzf4ie16OHKC3HsNj7RmRT3jO07Y/U=",
    "sha256-Eaamrrh0b5a/naRsV/zg7s6+kGvexMXZQARWP6ukkg4=",
];

/// 128 random bits, in hex: a fresh nonce for each page.
fn style_nonce() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A third-party file, byte for byte as its npm package ships it.
#[derive(Clone, Copy, Debug)]
struct Vendored {
    package: &'static str,
    version: &'static str,
    /// Its path under `vendor/`, as `vendor/README.md` lists it.
    file: &'static str,
    bytes: &'static [u8],
}

macro_rules! vendored {
    ($package:literal, $version:literal, $file:literal) => {
        Vendored {
            package: $package,
            version: $version,
            file: $file,
            bytes: include_bytes!(concat!("vendor/", $file)),
        }
    };
}

/// Every third-party file served; `vendor/README.md` records each one's version and SHA-256.
/// The licences are served too, so whoever receives the code receives its notice.
const VENDORED: &[Vendored] = &[
    vendored!("graphiql", "3.9.0", "graphiql/graphiql.min.js"),
    vendored!("graphiql", "3.9.0", "graphiql/graphiql.min.css"),
    vendored!("graphiql", "3.9.0", "graphiql/LICENSE"),
    vendored!("react", "18.3.1", "react/react.production.min.js"),
    vendored!("react", "18.3.1", "react/LICENSE"),
    vendored!(
        "react-dom",
        "18.3.1",
        "react-dom/react-dom.production.min.js"
    ),
    vendored!("react-dom", "18.3.1", "react-dom/LICENSE"),
    vendored!("graphql-ws", "5.16.2", "graphql-ws/graphql-ws.min.js"),
    vendored!("graphql-ws", "5.16.2", "graphql-ws/LICENSE.md"),
];

impl Vendored {
    fn name(&self) -> &'static str {
        self.file.rsplit('/').next().unwrap_or(self.file)
    }

    /// `/graphiql/graphiql@3.9.0/graphiql.min.js`
    fn url(&self) -> String {
        format!(
            "/graphiql/{}@{}/{}",
            self.package,
            self.version,
            self.name()
        )
    }

    fn content_type(&self) -> &'static str {
        let name = self.name();
        if name.ends_with(".js") {
            JAVASCRIPT
        } else if name.ends_with(".css") {
            CSS
        } else {
            TEXT
        }
    }
}

/// Adds the routes of the page's script and stylesheet and of every vendored file.
pub(super) fn routes<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let router = router
        .route(
            "/graphiql/page.js",
            get(|| async {
                static_file(JAVASCRIPT, Caching::Revalidate, include_bytes!("page.js"))
            }),
        )
        .route(
            "/graphiql/page.css",
            get(|| async { static_file(CSS, Caching::Revalidate, include_bytes!("page.css")) }),
        );
    VENDORED.iter().fold(router, |router, file| {
        router.route(
            &file.url(),
            get(move || async move {
                static_file(file.content_type(), Caching::Immutable, file.bytes)
            }),
        )
    })
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;

    const RECORD: &str = include_str!("vendor/README.md");
    /// The texts of [`STYLE_ATTRIBUTE_HASHES`], in order.
    const STYLE_ATTRIBUTES: [&str; 2] = ["width: 10em", "color: #888"];

    /// The rows of the README's table: (package, version, file, sha256).
    fn recorded() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
        RECORD
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line
                    .trim()
                    .trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect();
                match cells[..] {
                    [package, version, file, sum, _]
                        if sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        Some((package, version, file, sum))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    fn sha256(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn every_vendored_file_is_the_one_recorded() {
        let recorded = recorded();
        assert_eq!(
            recorded.len(),
            VENDORED.len(),
            "vendor/README.md and VENDORED list the same files"
        );
        for file in VENDORED {
            let row = recorded
                .iter()
                .find(|(_, _, path, _)| *path == file.file)
                .unwrap_or_else(|| panic!("{} is not in vendor/README.md", file.file));
            assert_eq!(
                (row.0, row.1),
                (file.package, file.version),
                "{}: package and version",
                file.file
            );
            assert_eq!(sha256(file.bytes), row.3, "{}: SHA-256", file.file);
        }
    }

    #[test]
    fn the_page_loads_every_vendored_script_and_stylesheet_and_nothing_else() {
        let mut expected: Vec<String> = VENDORED
            .iter()
            .filter(|file| file.content_type() != TEXT)
            .map(Vendored::url)
            .chain([
                "/graphiql/page.js".to_owned(),
                "/graphiql/page.css".to_owned(),
            ])
            .collect();
        let mut loaded: Vec<String> = PAGE
            .split(['"', '\''])
            .filter(|part| part.starts_with('/') || part.contains("://"))
            .map(str::to_owned)
            .collect();
        expected.sort();
        loaded.sort();
        assert_eq!(loaded, expected);
    }

    #[test]
    fn the_inline_styles_allowed_are_the_bundles() {
        use base64::Engine as _;
        let bundle = std::str::from_utf8(VENDORED[0].bytes).unwrap();
        assert_eq!(VENDORED[0].file, "graphiql/graphiql.min.js");
        for (text, hash) in STYLE_ATTRIBUTES.iter().zip(STYLE_ATTRIBUTE_HASHES) {
            assert!(
                bundle.contains(&format!("style=\"{text}\"")),
                "GraphiQL no longer writes style=\"{text}\""
            );
            let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text));
            assert_eq!(*hash, format!("sha256-{digest}"));
        }
        assert_eq!(
            bundle.matches("style=\"").count(),
            STYLE_ATTRIBUTES.len(),
            "every style attribute in GraphiQL's HTML strings is allowed"
        );
    }

    #[test]
    fn every_page_has_a_fresh_nonce() {
        let first = graphiql_page();
        let second = graphiql_page();
        let nonce = |response: &Response| {
            response
                .extensions()
                .get::<InlineStyles>()
                .unwrap()
                .nonce
                .clone()
        };
        assert_ne!(nonce(&first), nonce(&second));
        assert_eq!(nonce(&first).len(), 32);
        assert_eq!(
            PAGE.matches(NONCE_SLOT).count(),
            1,
            "one place for the nonce"
        );
    }
}

//! Checks a GraphQL document before anything costly reads it.
//!
//! Every door (HTTP POST and GET, both WebSocket subprotocols, each entry of a batch) turns a
//! client's request into a [`Checked`] one here, and nothing else parses client documents.
//! The checks run in time linear in the document, in this order:
//!
//! 1. **Size**: at most [`MAX_QUERY_BYTES`] bytes and [`MAX_TOKENS`] tokens.
//! 2. **Nesting**: a lexical scan refuses more than [`MAX_NESTING`] open `{`, `[` or `(` before
//!    the parser sees the text. async-graphql-parser 7.2.1 recurses once per nesting level of a
//!    value, a list type or a selection set, and about 1,600 levels of `[` overflow a worker
//!    thread's stack and abort the process (reported upstream; guarded here until it is fixed).
//! 3. **Fragments**: each fragment's expanded size (fields, counting every spread of another
//!    fragment as that fragment's size) and depth are computed once, bottom up, never by
//!    expanding. A chain `F1 { ...F0 ...F0 } … F30 { ...F29 ...F29 }` is 1.2 KB of text and 2^30
//!    fields once expanded; async-graphql 7.2.1's recursion-depth check, its validation and its
//!    complexity all walk the expansion, so it is refused here if its expansion holds more fields
//!    than the cost limit allows, or nests deeper than [`MAX_RECURSIVE_DEPTH`]. A fragment that
//!    spreads itself is refused too (async-graphql's own depth check would walk the cycle).
//!
//! Once a document has passed, async-graphql's validation and cost analysis walk at most
//! `MAX_COMPLEXITY` fields: the costliest documents these checks let through (a fragment chain
//! expanding to 4,096 fields, 1,300 aliases in 24 KB) were answered in 4–5 ms over HTTP by a
//! release build, against 2 ms for `{ __typename }`, so a worker is never held for long.
//!
//! One file, a third of it tests: the scan, the budgets and the fragment walk are one line of
//! defence, and each refusal is tested next to it.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
};

use async_graphql::{
    Request, ServerError,
    parser::{
        parse_query,
        types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet},
    },
};

use moka::sync::Cache;

use super::MAX_COMPLEXITY;
use crate::error::Code;

/// Largest document accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Most tokens (names, punctuators, values) a document may hold. The largest ordinary
/// document, GraphiQL's introspection query, has about 400.
pub const MAX_TOKENS: usize = 4_000;
/// Most `{`, `[` and `(` open at once anywhere in a document.
pub const MAX_NESTING: usize = 64;
/// Deepest selection, counting fragment spreads and inline fragments as levels, as
/// async-graphql's `limit_recursive_depth` counts it.
pub const MAX_RECURSIVE_DEPTH: usize = 32;

/// Largest document whose parse is kept for the next request with the same text.
pub const MAX_CACHED_QUERY_BYTES: usize = 8 * 1024;
/// What the kept parses may weigh together, at most: each weighs its text plus
/// [`BYTES_PER_TOKEN`] per token, an upper estimate of what a parsed token takes (a name, its
/// position, its node), so a flood of large documents cannot make the kept parses large.
const PARSED_WEIGHT: u64 = 8 * 1024 * 1024;
const BYTES_PER_TOKEN: usize = 256;

/// A kept parse and what it weighs.
struct Parsed {
    document: ExecutableDocument,
    weight: u32,
}

/// Parses of documents that passed every check, by their exact text. Clients send the same
/// few documents over and over, and parsing one costs more than the rest of a small request:
/// about 160,000 instructions for a `sendMessage` (counted with callgrind), against a few
/// thousand to copy a kept parse. Only a document that passed is kept, so a kept text is
/// one the checks let through; a flood of distinct documents only evicts.
static PARSED: LazyLock<Cache<String, Arc<Parsed>>> = LazyLock::new(|| {
    Cache::builder()
        .weigher(|_, parsed: &Arc<Parsed>| parsed.weight)
        .max_capacity(PARSED_WEIGHT)
        .build()
});

/// A request whose document has passed the checks, parsed once, and what it will run.
pub struct Checked {
    pub request: Request,
    /// The type of the operation the request runs; `None` when the document does not say which
    /// (several operations and no `operationName`), which execution then refuses.
    pub kind: Option<OperationType>,
}

impl Checked {
    pub fn is_subscription(&self) -> bool {
        self.kind == Some(OperationType::Subscription)
    }
}

/// Checks and parses `request`'s document. The error is what to answer instead of executing.
pub fn check(mut request: Request) -> Result<Checked, ServerError> {
    let query = request.query.as_str();
    if query.len() > MAX_QUERY_BYTES {
        return Err(refusal(
            Code::BadUserInput,
            format!("the document is larger than {MAX_QUERY_BYTES} bytes"),
        ));
    }
    if let Some(parsed) = PARSED.get(query) {
        let kind = operation_kind(&parsed.document, request.operation_name.as_deref());
        request.set_parsed_query(parsed.document.clone());
        return Ok(Checked { request, kind });
    }
    let scan = scan(query);
    if scan.deepest > MAX_NESTING {
        return Err(refusal(
            Code::BadUserInput,
            format!("the document nests more than {MAX_NESTING} brackets deep"),
        ));
    }
    if scan.tokens > MAX_TOKENS {
        return Err(refusal(
            Code::BadUserInput,
            format!("the document has more than {MAX_TOKENS} tokens"),
        ));
    }
    let document = parse(query)?;
    if query.len() <= MAX_CACHED_QUERY_BYTES {
        let weight = query.len() + scan.tokens * BYTES_PER_TOKEN;
        let parsed = Parsed {
            document: document.clone(),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        };
        PARSED.insert(query.to_owned(), Arc::new(parsed));
    }
    let kind = operation_kind(&document, request.operation_name.as_deref());
    request.set_parsed_query(document);
    Ok(Checked { request, kind })
}

/// Parses a document that passed the size and nesting checks, and checks its fragments.
fn parse(query: &str) -> Result<ExecutableDocument, ServerError> {
    let document = parse_query(query).map_err(|e| {
        let mut error = ServerError::from(e);
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", Code::GraphqlParseFailed.as_str());
        error
    })?;
    expansion(&document)?;
    Ok(document)
}

/// A refusal with its `extensions.code` (and `field: "query"` for a document over a limit).
fn refusal(code: Code, message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", code.as_str());
    if code == Code::BadUserInput {
        extensions.set("field", "query");
    }
    error
}

/// The type of the operation a request runs, by the GraphQL spec's rule: the one named by
/// `operationName`, else the document's only operation.
pub(crate) fn operation_kind(
    document: &ExecutableDocument,
    name: Option<&str>,
) -> Option<OperationType> {
    match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| op.node.ty)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// What a lexical scan found: tokens, and the most brackets open at once.
#[derive(Debug, PartialEq, Eq)]
struct Scan {
    tokens: usize,
    deepest: usize,
}

/// Counts tokens and bracket nesting, skipping strings, block strings and comments, in one pass.
/// A lexical error (an unterminated string) ends the scan: the parser reports it.
fn scan(text: &str) -> Scan {
    let bytes = text.as_bytes();
    let (mut at, mut tokens, mut depth, mut deepest) = (0, 0, 0usize, 0);
    while at < bytes.len() {
        match bytes[at] {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => at += 1,
            b'#' => {
                while at < bytes.len() && bytes[at] != b'\n' && bytes[at] != b'\r' {
                    at += 1;
                }
            }
            b'"' if bytes[at..].starts_with(b"\"\"\"") => {
                tokens += 1;
                at += 3;
                loop {
                    if at >= bytes.len() {
                        return Scan { tokens, deepest };
                    }
                    if bytes[at..].starts_with(b"\\\"\"\"") {
                        at += 4;
                    } else if bytes[at..].starts_with(b"\"\"\"") {
                        at += 3;
                        break;
                    } else {
                        at += 1;
                    }
                }
            }
            b'"' => {
                tokens += 1;
                at += 1;
                loop {
                    match bytes.get(at) {
                        None | Some(b'\n' | b'\r') => return Scan { tokens, deepest },
                        Some(b'\\') => at += 2,
                        Some(b'"') => {
                            at += 1;
                            break;
                        }
                        Some(_) => at += 1,
                    }
                }
            }
            b'{' | b'[' | b'(' => {
                tokens += 1;
                depth += 1;
                deepest = deepest.max(depth);
                at += 1;
            }
            b'}' | b']' | b')' => {
                tokens += 1;
                depth = depth.saturating_sub(1);
                at += 1;
            }
            b'!' | b'$' | b'&' | b':' | b'=' | b'@' | b'|' => {
                tokens += 1;
                at += 1;
            }
            b'.' if bytes[at..].starts_with(b"...") => {
                tokens += 1;
                at += 3;
            }
            _ => {
                // A name, a number, or a character the parser will refuse: one token to the
                // next separator.
                tokens += 1;
                at += 1;
                while at < bytes.len()
                    && !matches!(
                        bytes[at],
                        b' ' | b'\t'
                            | b'\n'
                            | b'\r'
                            | b','
                            | b'#'
                            | b'"'
                            | b'{'
                            | b'['
                            | b'('
                            | b'}'
                            | b']'
                            | b')'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b':'
                            | b'='
                            | b'@'
                            | b'|'
                    )
                    && !bytes[at..].starts_with(b"...")
                {
                    at += 1;
                }
            }
        }
    }
    Scan { tokens, deepest }
}

/// A selection's size once every fragment spread in it is expanded, and its depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expanded {
    /// Fields, saturating.
    fields: usize,
    /// Levels of fields, spreads and inline fragments below this one.
    depth: usize,
}

#[derive(Clone, Copy)]
enum Visit {
    InProgress,
    Done(Expanded),
}

/// Refuses a document whose operations, once fragments are expanded, hold more fields than the
/// cost limit allows or nest deeper than [`MAX_RECURSIVE_DEPTH`], or whose fragments spread
/// themselves. Each fragment is sized once and remembered, and the walk gives up as soon as it
/// is deeper than the limit, so it takes time linear in the document and bounded recursion.
fn expansion(document: &ExecutableDocument) -> Result<(), ServerError> {
    let mut sizes: HashMap<&str, Visit> = HashMap::new();
    let mut total = 0usize;
    for (_, operation) in document.operations.iter() {
        let expanded = expand(document, &operation.node.selection_set.node, 0, &mut sizes)?;
        total = total.saturating_add(expanded.fields);
    }
    if total > MAX_COMPLEXITY {
        return Err(refusal(
            Code::QueryTooComplex,
            format!(
                "Query is too complex: its fragments expand to more than {MAX_COMPLEXITY} fields"
            ),
        ));
    }
    Ok(())
}

fn expand<'a>(
    document: &'a ExecutableDocument,
    selection_set: &'a SelectionSet,
    level: usize,
    sizes: &mut HashMap<&'a str, Visit>,
) -> Result<Expanded, ServerError> {
    if level > MAX_RECURSIVE_DEPTH {
        return Err(refusal(
            Code::QueryTooComplex,
            format!("Query is too complex: it nests more than {MAX_RECURSIVE_DEPTH} levels deep"),
        ));
    }
    let mut total = Expanded {
        fields: 0,
        depth: 0,
    };
    let add = |total: &mut Expanded, child: Expanded, fields: usize| {
        total.fields = total
            .fields
            .saturating_add(child.fields)
            .saturating_add(fields);
        total.depth = total.depth.max(child.depth + 1);
    };
    for selection in &selection_set.items {
        match &selection.node {
            Selection::Field(field) => {
                let child = expand(document, &field.node.selection_set.node, level + 1, sizes)?;
                add(&mut total, child, 1);
            }
            Selection::InlineFragment(inline) => {
                let child = expand(document, &inline.node.selection_set.node, level + 1, sizes)?;
                add(&mut total, child, 0);
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                let child = match sizes.get(name) {
                    Some(Visit::Done(expanded)) => *expanded,
                    Some(Visit::InProgress) => {
                        return Err(refusal(
                            Code::GraphqlValidationFailed,
                            format!("Cannot spread fragment \"{name}\" within itself"),
                        ));
                    }
                    None => match document.fragments.get(name) {
                        // An unknown fragment is validation's to report.
                        None => Expanded {
                            fields: 0,
                            depth: 0,
                        },
                        Some(fragment) => {
                            sizes.insert(name, Visit::InProgress);
                            // Sized from level 0 so that its size does not depend on where it
                            // was first spread; the depth check below adds the level.
                            let expanded =
                                expand(document, &fragment.node.selection_set.node, 0, sizes)?;
                            sizes.insert(name, Visit::Done(expanded));
                            expanded
                        }
                    },
                };
                if level + 1 + child.depth > MAX_RECURSIVE_DEPTH {
                    return Err(refusal(
                        Code::QueryTooComplex,
                        format!(
                            "Query is too complex: it nests more than {MAX_RECURSIVE_DEPTH} levels deep"
                        ),
                    ));
                }
                add(&mut total, child, 0);
            }
        }
        if total.fields > MAX_COMPLEXITY {
            return Err(refusal(
                Code::QueryTooComplex,
                format!(
                    "Query is too complex: its fragments expand to more than {MAX_COMPLEXITY} fields"
                ),
            ));
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_that_passed_is_parsed_once_and_a_refused_one_is_never_kept() {
        let passed = "query KeptParse { me { id } }";
        assert_eq!(code(check(Request::new(passed))), "ok");
        assert!(PARSED.contains_key(passed), "the parse was not kept");
        // The kept parse answers the same: the request runs the document it names.
        let again = check(Request::new(passed).operation_name("KeptParse")).unwrap();
        assert_eq!(again.kind, Some(OperationType::Query));

        let refused = "query NotKept { ...F } fragment F on Query { ...F }";
        assert_ne!(code(check(Request::new(refused))), "ok");
        let unparsable = "query { me { id }";
        assert_eq!(
            code(check(Request::new(unparsable))),
            "GRAPHQL_PARSE_FAILED"
        );
        assert!(!PARSED.contains_key(refused) && !PARSED.contains_key(unparsable));

        let large = format!(
            "query {{ me {{ id }} }} # {}",
            "x".repeat(MAX_CACHED_QUERY_BYTES)
        );
        assert_eq!(code(check(Request::new(large.as_str()))), "ok");
        assert!(
            !PARSED.contains_key(&large),
            "a document over the size kept was kept"
        );
    }

    fn code(result: Result<Checked, ServerError>) -> String {
        match result {
            Ok(_) => "ok".into(),
            Err(e) => {
                let extensions = serde_json::to_value(&e.extensions).unwrap_or_default();
                extensions["code"].as_str().unwrap_or("<none>").to_owned()
            }
        }
    }

    fn checked(query: &str) -> String {
        code(check(Request::new(query)))
    }

    #[test]
    fn the_scan_skips_strings_and_comments() {
        assert_eq!(
            scan(
                r#"{ a(x: "{{[[((\"") # {{{{{
                b(y: """ {[( \""" """) ...F }"#
            ),
            Scan {
                tokens: 16,
                deepest: 2
            }
        );
        assert_eq!(scan("{ a { b { c } } }").deepest, 3);
        assert_eq!(scan("query($v: [[[Int]]]) { a }").deepest, 4);
    }

    #[test]
    fn deep_values_types_and_selections_are_refused_before_parsing() {
        let deep = MAX_NESTING + 1;
        let list = format!("{{ a(x: {}1{}) }}", "[".repeat(deep), "]".repeat(deep));
        assert_eq!(checked(&list), "BAD_USER_INPUT");
        let object = format!("{{ a(x: {}{}) }}", "{x: ".repeat(deep), "}".repeat(deep));
        assert_eq!(checked(&object), "BAD_USER_INPUT");
        let default = format!(
            "query($v: Int = {}1{}) {{ a }}",
            "[".repeat(deep),
            "]".repeat(deep)
        );
        assert_eq!(checked(&default), "BAD_USER_INPUT");
        let ty = format!(
            "query($v: {}Int{}) {{ a }}",
            "[".repeat(deep),
            "]".repeat(deep)
        );
        assert_eq!(checked(&ty), "BAD_USER_INPUT");
        // What the parser overflowed on: 1,600 levels in a 3 KB document.
        let crash = format!("{{ a(x: {}) }}", "[".repeat(1_600));
        assert_eq!(checked(&crash), "BAD_USER_INPUT");
        // Just under the limit is parsed (and left to validation).
        let fine = format!("{{ a(x: {}1{}) }}", "[".repeat(60), "]".repeat(60));
        assert_eq!(checked(&fine), "ok");
    }

    #[test]
    fn size_and_token_budgets() {
        let big = format!("{{ a }} # {}", "x".repeat(MAX_QUERY_BYTES));
        assert_eq!(checked(&big), "BAD_USER_INPUT");
        let many = format!("{{ {} }}", "a ".repeat(MAX_TOKENS));
        assert_eq!(checked(&many), "BAD_USER_INPUT");
        assert_eq!(checked("{ a b c }"), "ok");
        assert_eq!(checked("{ a("), "GRAPHQL_PARSE_FAILED");
    }

    /// `fragment F1 on Query { ...F0 ...F0 } … fragment Fn { ...Fn-1 ...Fn-1 }`.
    fn doubling_chain(levels: usize) -> String {
        let mut text =
            format!("query {{ ...F{levels} }}\nfragment F0 on Query {{ me {{ id }} }}\n");
        for i in 1..=levels {
            text.push_str(&format!(
                "fragment F{i} on Query {{ ...F{j} ...F{j} }}\n",
                j = i - 1
            ));
        }
        text
    }

    #[test]
    fn fragments_that_expand_past_the_cost_limit_are_refused_without_expanding() {
        // 2^30 × 2 fields once expanded: refused at once.
        assert_eq!(checked(&doubling_chain(30)), "QUERY_TOO_COMPLEX");
        // 2^11 × 2 = 4,096 fields fit; 2^12 × 2 do not.
        assert_eq!(checked(&doubling_chain(11)), "ok");
        assert_eq!(checked(&doubling_chain(12)), "QUERY_TOO_COMPLEX");
        // Aliases count too: 5,001 fields written out.
        let flat: String = (0..MAX_COMPLEXITY / 2 + 1)
            .map(|i| format!("a{i}: me b{i}: me "))
            .collect();
        assert!(
            scan(&flat).tokens > MAX_TOKENS,
            "the token budget comes first"
        );
    }

    #[test]
    fn deep_and_cyclic_fragments_are_refused() {
        let mut chain = String::from("query { ...F40 }\nfragment F0 on Query { me { id } }\n");
        for i in 1..=40 {
            chain.push_str(&format!("fragment F{i} on Query {{ ...F{} }}\n", i - 1));
        }
        assert_eq!(checked(&chain), "QUERY_TOO_COMPLEX");
        let cycle = "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert_eq!(checked(cycle), "GRAPHQL_VALIDATION_FAILED");
        let own = "query { ...A } fragment A on Query { me { id ...A } }";
        assert_ne!(checked(own), "ok");
    }

    #[test]
    fn the_operation_run_is_the_named_one_or_the_only_one() {
        let kind = |query: &str, name: Option<&str>| {
            let mut request = Request::new(query);
            if let Some(name) = name {
                request = request.operation_name(name);
            }
            check(request).ok().and_then(|c| c.kind)
        };
        assert_eq!(kind("{ a }", None), Some(OperationType::Query));
        assert_eq!(
            kind("mutation M { a } query Q { b }", Some("M")),
            Some(OperationType::Mutation)
        );
        assert_eq!(kind("mutation M { a } query Q { b }", None), None);
        assert_eq!(
            kind("subscription S { a }", None),
            Some(OperationType::Subscription)
        );
    }
}

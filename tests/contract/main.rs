//! The API documents against the code, natively (no server): every route the router answers is in
//! `docs/api/openapi.json` with exactly its methods, and the document has nothing more; every frame
//! type in `src/protocol.rs` (client and server) is in `docs/api/asyncapi.json`, and nothing more.
//! A failure names what is missing where, so adding a route or a frame means adding it there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

fn repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn json_file(relative: &str) -> Value {
    serde_json::from_str(&repo_file(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Path → methods, as the router answers them: the route table and the browser client's paths.
fn router_routes() -> BTreeMap<String, BTreeSet<String>> {
    let mut routes = BTreeMap::new();
    let mut add = |path: &str, allow: &str| {
        routes
            .entry(path.to_owned())
            .or_insert_with(BTreeSet::new)
            .extend(allow.split(", ").map(str::to_owned));
    };
    for route in clubhouse::api::ROUTES {
        add(route.path, route.allow);
    }
    for path in clubhouse::api::page::PATHS {
        add(path, "GET, HEAD");
    }
    routes
}

/// Path → methods, as the OpenAPI document lists them.
fn documented_routes(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let paths = doc["paths"].as_object().expect("openapi.json has paths");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("a path item is an object")
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .map(|k| k.to_ascii_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// What `ours` has that `theirs` lacks, one `METHOD /path` per line.
fn missing(
    ours: &BTreeMap<String, BTreeSet<String>>,
    theirs: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, methods) in ours {
        for method in methods {
            if !theirs.get(path).is_some_and(|m| m.contains(method)) {
                out.push(format!("{method} {path}"));
            }
        }
    }
    out
}

fn route_parity(
    router: &BTreeMap<String, BTreeSet<String>>,
    doc: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), String> {
    let undocumented = missing(router, doc);
    let unrouted = missing(doc, router);
    if undocumented.is_empty() && unrouted.is_empty() {
        return Ok(());
    }
    let mut report = String::new();
    if !undocumented.is_empty() {
        report.push_str(&format!(
            "the router answers these, but docs/api/openapi.json has no operation for them (add them under \"paths\"):\n  {}\n",
            undocumented.join("\n  ")
        ));
    }
    if !unrouted.is_empty() {
        report.push_str(&format!(
            "docs/api/openapi.json documents these, but the router (ROUTES in src/api/mod.rs, or page::PATHS) does not answer them:\n  {}\n",
            unrouted.join("\n  ")
        ));
    }
    Err(report)
}

#[test]
fn openapi_lists_exactly_the_routes_the_router_answers() {
    let router = router_routes();
    assert!(router.len() > 10, "the route table was read: {router:?}");
    if let Err(report) = route_parity(
        &router,
        &documented_routes(&json_file("docs/api/openapi.json")),
    ) {
        panic!("{report}");
    }
}

#[test]
fn route_parity_reports_each_difference() {
    let set = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let router = BTreeMap::from([
        ("/a".to_owned(), set(&["GET"])),
        ("/b".to_owned(), set(&["PUT", "DELETE"])),
    ]);
    let doc = BTreeMap::from([
        ("/b".to_owned(), set(&["PUT"])),
        ("/c".to_owned(), set(&["POST"])),
    ]);
    let report = route_parity(&router, &doc).unwrap_err();
    assert!(report.contains("GET /a"), "{report}");
    assert!(report.contains("DELETE /b"), "{report}");
    assert!(report.contains("POST /c"), "{report}");
    assert!(!report.contains("PUT /b"), "{report}");
    assert!(route_parity(&router, &router).is_ok());
}

/// The variants of `enum <name>` in Rust source, snake_cased as serde spells them
/// (`rename_all = "snake_case"`).
fn enum_variants(source: &str, name: &str) -> BTreeSet<String> {
    let start = source
        .find(&format!("enum {name}"))
        .unwrap_or_else(|| panic!("no `enum {name}` in the source"));
    let body = &source[start..];
    let body = &body[body.find('{').expect("enum body") + 1..];
    let body = &body[..body.find("\n}").expect("end of the enum")];
    body.lines()
        .filter(|line| line.starts_with("    ") && !line.starts_with("     "))
        .filter_map(|line| {
            let ident: String = line
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            ident
                .starts_with(|c: char| c.is_ascii_uppercase())
                .then(|| snake_case(&ident))
        })
        .collect()
}

fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Follows a local `$ref` ("#/a/b") in `doc`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => resolve(doc, doc.pointer(&pointer[1..]).expect("a $ref resolves")),
        None => value,
    }
}

/// The frame types an AsyncAPI operation lists: each message's `type` constant, or the constant
/// text of a plain-text frame (`ping`, `pong`).
fn operation_frame_types(doc: &Value, operation: &str) -> BTreeSet<String> {
    let messages = doc["operations"][operation]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("asyncapi.json has no operation {operation} with messages"));
    messages
        .iter()
        .map(|m| {
            let payload = resolve(doc, &resolve(doc, m)["payload"]);
            payload["properties"]["type"]["const"]
                .as_str()
                .or_else(|| payload["const"].as_str())
                .unwrap_or_else(|| panic!("a message of {operation} has no constant type: {m}"))
                .to_owned()
        })
        .collect()
}

/// The `type` of the frame `protocol::batch_frames` builds, from the text it starts with.
fn batch_frame_type(source: &str) -> String {
    const START: &str = r##"const HEAD: &str = r#"{"type":""##;
    let at = source
        .find(START)
        .expect("`protocol::batch_frames` starts its frame with a `HEAD` constant")
        + START.len();
    source[at..]
        .split('"')
        .next()
        .expect("a type name")
        .to_owned()
}

fn frame_parity(side: &str, code: &BTreeSet<String>, doc: &BTreeSet<String>) -> Option<String> {
    let undocumented: Vec<_> = code.difference(doc).cloned().collect();
    let stale: Vec<_> = doc.difference(code).cloned().collect();
    (!undocumented.is_empty() || !stale.is_empty()).then(|| {
        format!(
            "{side}: in src/protocol.rs but not in docs/api/asyncapi.json: {undocumented:?}; \
             in docs/api/asyncapi.json but not in src/protocol.rs: {stale:?}\n"
        )
    })
}

#[test]
fn asyncapi_lists_exactly_the_frames_in_protocol_rs() {
    let source = repo_file("src/protocol.rs");
    let doc = json_file("docs/api/asyncapi.json");
    // `ping` and `pong` are plain text frames, answered before any JSON is read.
    let mut client = enum_variants(&source, "FrameType");
    client.insert("ping".into());
    let mut server = enum_variants(&source, "ServerFrame");
    server.insert("pong".into());
    // The `batch` frame wraps frames already serialised, so it is text joined by
    // `protocol::batch_frames`, not a variant: its type is read from the text it starts with.
    server.insert(batch_frame_type(&source));
    assert!(
        client.contains("message") && server.contains("history"),
        "{client:?} {server:?}"
    );
    let log_items = enum_variants(&source, "LogItem");
    assert!(
        log_items.is_subset(&server),
        "catch-up items {log_items:?} are server frames"
    );
    let report: String = [
        frame_parity(
            "client frames (operation receiveClientFrames)",
            &client,
            &operation_frame_types(&doc, "receiveClientFrames"),
        ),
        frame_parity(
            "server frames (operation sendServerFrames)",
            &server,
            &operation_frame_types(&doc, "sendServerFrames"),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(report.is_empty(), "{report}");
}

#[test]
fn enum_variants_reads_serde_names() {
    let source = "pub enum ServerFrame<'a> {\n    /// doc\n    Message {\n        id: i64,\n    },\n    PresenceChanges {\n        joined: Vec<String>,\n    },\n    Pong,\n    Error(String),\n}\n";
    assert_eq!(
        enum_variants(source, "ServerFrame"),
        ["message", "presence_changes", "pong", "error"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

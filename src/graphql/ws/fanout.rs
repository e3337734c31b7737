//! Room events rendered once per distinct subscription, not once per subscriber.
//!
//! A `roomEvents` subscription over a WebSocket starts like any operation: async-graphql parses,
//! validates and runs the resolver, which checks the caller and takes the room feed. The
//! resolver then hands the feed to the socket's operation task ([`FeedHandoff`]) instead of
//! streaming it through async-graphql. That task renders each event through [`Renders`]: the
//! first subscriber to need an event for a given operation executes the operation once with the
//! event injected ([`InjectedEvent`]), serializes the response once, and every other subscriber
//! of the same operation gets the same bytes, wrapped in its own frame (its id).
//!
//! Subscribers share a rendering when their query, operation name and variables are the same,
//! except a variable used only as the root field's `after` (which chooses where the feed
//! starts, not how an event looks), and except a document that selects a field whose value
//! depends on who asks (`CALLER_DEPENDENT`), whose renderings are each caller's own. The rest
//! of an event's fields do not depend on who asks: the caller is checked when the subscription
//! starts. A live event is one `Arc` shared by every
//! local subscriber, which is what renderings are matched by; events replayed from the store
//! are each subscriber's own, and rendered for it alone.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_graphql::{
    Request, Variables,
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};
use async_graphql_value::Value;
use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::OnceCell;

use crate::{
    auth::Caller,
    graphql::{AppSchema, live::InjectedEvent},
    model::RoomEvent,
};

/// Renderings kept per operation, at most: enough for subscribers a burst apart to share them.
const RECENT: usize = 64;
/// Bytes of renderings kept per operation, at most.
const RECENT_BYTES: usize = 256 * 1024;
/// Bytes of renderings kept for all operations together, at most; beyond it, events are
/// rendered for each subscriber, uncached, until room is made.
const ALL_BYTES: usize = 64 * 1024 * 1024;

/// Fields an event may carry whose value depends on who asks (`Room.myRole`, the read state). A document that
/// names one anywhere (its text holds every field name it selects, through fragments and
/// aliases alike) is rendered for each caller apart.
const CALLER_DEPENDENT: &[&str] = &[
    "myRole",
    "unreadCount",
    "mentionCount",
    "lastReadMessageId",
    "lastMessage",
];

/// What renders a subscription's events: its request, minus where it starts.
#[derive(Clone)]
pub struct Operation {
    query: String,
    /// The document, parsed once when the subscription started.
    document: ExecutableDocument,
    operation_name: Option<String>,
    variables: Variables,
    /// A variable used only as the root field's `after`, left out of the key.
    after_only: Option<String>,
    caller: Caller,
}

impl Operation {
    /// The operation of a checked request (its document is parsed; see `graphql::document`).
    pub fn new(request: &mut Request, caller: Caller) -> Option<Self> {
        let document = request.parsed_query().ok()?.clone();
        Some(Self {
            query: request.query.clone(),
            after_only: after_only_variable(&document),
            document,
            operation_name: request.operation_name.clone(),
            variables: request.variables.clone(),
            caller,
        })
    }

    /// What subscribers must share to share renderings (see the module docs).
    fn key(&self) -> String {
        let mut variables = self.variables.clone();
        if let Some(name) = &self.after_only {
            variables.remove(&async_graphql::Name::new(name));
        }
        let variables = serde_json::to_string(&variables).unwrap_or_default();
        let name = self.operation_name.as_deref().unwrap_or_default();
        // A field whose value depends on who asks makes the rendering the caller's own.
        let whose = match CALLER_DEPENDENT.iter().any(|f| self.query.contains(f)) {
            true => self
                .caller
                .user_id()
                .map(|id| id.to_hex())
                .unwrap_or_default(),
            false => String::new(),
        };
        format!("{}\u{0}{name}\u{0}{variables}\u{0}{whose}", self.query)
    }

    /// The `payload` of a `next` message for `event`: one execution, one serialization.
    async fn render(&self, schema: &AppSchema, event: Arc<RoomEvent>) -> Arc<str> {
        let mut request = Request::new(self.query.clone())
            .variables(self.variables.clone())
            .data(self.caller.clone())
            .data(InjectedEvent(event));
        request.set_parsed_query(self.document.clone());
        if let Some(name) = &self.operation_name {
            request = request.operation_name(name.clone());
        }
        let mut responses = schema.execute_stream(request);
        let json = match responses.next().await {
            Some(response) => serde_json::to_string(&response),
            None => Ok(r#"{"data":null}"#.to_owned()),
        };
        Arc::from(json.unwrap_or_else(|e| {
            format!(r#"{{"errors":[{{"message":"cannot encode the event: {e}"}}]}}"#)
        }))
    }
}

/// The name of a variable the document uses only as a root field's `after` argument, if any:
/// exactly one `after: $v` on a root field, and `$v` used nowhere else. Anything less certain
/// keeps the variable in the key, which only costs sharing.
fn after_only_variable(document: &ExecutableDocument) -> Option<String> {
    let mut afters = Vec::new();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for (_, operation) in document.operations.iter() {
        for selection in &operation.node.selection_set.node.items {
            if let Selection::Field(field) = &selection.node {
                for (name, value) in &field.node.arguments {
                    if name.node == "after"
                        && let Value::Variable(variable) = &value.node
                    {
                        afters.push(variable.as_str());
                    }
                }
            }
        }
        count_selections(&operation.node.selection_set.node, &mut uses);
    }
    for fragment in document.fragments.values() {
        count_selections(&fragment.node.selection_set.node, &mut uses);
    }
    match afters.as_slice() {
        [name] if uses.get(name) == Some(&1) => Some((*name).to_owned()),
        _ => None,
    }
}

/// Counts each variable's uses in a selection set's arguments and directives.
fn count_selections<'a>(selection_set: &'a SelectionSet, uses: &mut HashMap<&'a str, usize>) {
    for selection in &selection_set.items {
        for directive in selection.node.directives() {
            for (_, value) in &directive.node.arguments {
                count_value(&value.node, uses);
            }
        }
        match &selection.node {
            Selection::Field(field) => {
                for (_, value) in &field.node.arguments {
                    count_value(&value.node, uses);
                }
                count_selections(&field.node.selection_set.node, uses);
            }
            Selection::InlineFragment(inline) => {
                count_selections(&inline.node.selection_set.node, uses);
            }
            Selection::FragmentSpread(_) => {}
        }
    }
}

fn count_value<'a>(value: &'a Value, uses: &mut HashMap<&'a str, usize>) {
    match value {
        Value::Variable(name) => *uses.entry(name.as_str()).or_default() += 1,
        Value::List(items) => items.iter().for_each(|item| count_value(item, uses)),
        Value::Object(fields) => fields.values().for_each(|item| count_value(item, uses)),
        _ => {}
    }
}

type Cell = Arc<OnceCell<Arc<str>>>;

/// One operation, shared by its subscribers, with its recent renderings matched by event
/// identity.
struct OperationRenders {
    key: String,
    operation: Operation,
    recent: Mutex<Recent>,
}

/// Renderings, oldest first, and their size. A `Weak` keeps the event's allocation, so its
/// address, from being reused by another event while the entry is here, without keeping the
/// event itself.
#[derive(Default)]
struct Recent {
    entries: VecDeque<Entry>,
    bytes: usize,
}

struct Entry {
    event: Weak<RoomEvent>,
    cell: Cell,
    /// The rendering's size once counted in `Recent::bytes`.
    bytes: usize,
}

impl OperationRenders {
    /// The cell for `event`'s rendering: the one kept, or a new one kept when `keep`.
    fn cell(&self, event: &Arc<RoomEvent>, keep: bool) -> Option<Cell> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = recent
            .entries
            .iter()
            .rev()
            .find(|entry| std::ptr::eq(entry.event.as_ptr(), Arc::as_ptr(event)))
        {
            return Some(entry.cell.clone());
        }
        if !keep {
            return None;
        }
        let cell = Cell::default();
        recent.entries.push_back(Entry {
            event: Arc::downgrade(event),
            cell: cell.clone(),
            bytes: 0,
        });
        Some(cell)
    }

    /// Counts the finished rendering in `cell` when it is still kept, and lets the oldest go
    /// while there are too many, or too many bytes, or renderings of events every subscriber
    /// is done with. `all` counts every operation's bytes, kept in step under this lock.
    fn settle(&self, cell: &Cell, rendered: usize, all: &AtomicUsize) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut counted = 0;
        if let Some(entry) = recent
            .entries
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.cell, cell))
        {
            entry.bytes = rendered;
            counted = rendered;
        }
        recent.bytes += counted;
        all.fetch_add(counted, Ordering::Relaxed);
        let mut freed = 0;
        while let Some(entry) = recent.entries.front() {
            let done = entry.event.strong_count() == 0;
            if !done && recent.entries.len() <= RECENT && recent.bytes <= RECENT_BYTES {
                break;
            }
            let size = entry.bytes;
            recent.entries.pop_front();
            recent.bytes -= size;
            freed += size;
        }
        all.fetch_sub(freed, Ordering::Relaxed);
    }
}

/// Every operation's recent renderings, and counts for `/metrics`.
#[derive(Default)]
pub struct Renders {
    operations: Mutex<HashMap<String, Arc<OperationRenders>>>,
    /// Bytes of renderings kept, all operations together.
    bytes: AtomicUsize,
    /// Room events rendered (once per distinct subscription), for `/metrics`.
    pub renders: Counter,
    /// Room events sent to subscribers, for `/metrics`.
    pub deliveries: Counter,
}

impl Renders {
    /// Joins the subscribers of `operation`; they share renderings until the last one leaves.
    pub fn join(self: &Arc<Self>, operation: Operation) -> Subscriber {
        let key = operation.key();
        let renders = self
            .operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(OperationRenders {
                    key,
                    operation,
                    recent: Mutex::default(),
                })
            })
            .clone();
        Subscriber {
            all: self.clone(),
            renders,
        }
    }
}

/// One subscription's place among those sharing its renderings.
pub struct Subscriber {
    all: Arc<Renders>,
    renders: Arc<OperationRenders>,
}

impl Subscriber {
    /// The `next` payload for `event`, rendered by whichever subscriber needed it first.
    pub async fn payload(&self, schema: &AppSchema, event: &Arc<RoomEvent>) -> Arc<str> {
        self.all.deliveries.inc();
        // Not kept when nobody else can ask for it (an event replayed from the store for this
        // subscriber alone, or a live one every other subscriber is done with), or when the
        // renderings kept are at their size limit.
        let keep =
            Arc::strong_count(event) > 1 && self.all.bytes.load(Ordering::Relaxed) <= ALL_BYTES;
        let Some(cell) = self.renders.cell(event, keep) else {
            self.all.renders.inc();
            return Box::pin(self.renders.operation.render(schema, event.clone())).await;
        };
        let mut rendered = None;
        let payload = cell
            // Boxed: a rendering is far larger than a waiting subscriber's state.
            .get_or_init(|| {
                Box::pin(async {
                    self.all.renders.inc();
                    let payload = self.renders.operation.render(schema, event.clone()).await;
                    rendered = Some(payload.len());
                    payload
                })
            })
            .await
            .clone();
        if let Some(size) = rendered {
            self.renders.settle(&cell, size, &self.all.bytes);
        }
        payload
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut operations = self
            .all
            .operations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The map's and ours: nobody else shares these renderings.
        if Arc::strong_count(&self.renders) <= 2 {
            operations.remove(&self.renders.key);
            let recent = self
                .renders
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.all.bytes.fetch_sub(recent.bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variable_used_only_as_after_is_left_out_of_the_key() {
        let after_only_variable = |query: &str| {
            let document = async_graphql::parser::parse_query(query).expect("a document");
            super::after_only_variable(&document)
        };
        let query =
            "subscription($r: ID!, $a: ID) { roomEvents(roomId: $r, after: $a) { __typename } }";
        assert_eq!(after_only_variable(query).as_deref(), Some("a"));
        let same_name = "subscription($r: ID!, $after: ID) { roomEvents(roomId: $r, after: $after) { __typename } }";
        assert_eq!(after_only_variable(same_name).as_deref(), Some("after"));
        let reused = "subscription($r: ID!, $a: ID) { roomEvents(roomId: $r, after: $a) { ... on MessageAdded { message { id(x: $a) } } } }";
        assert_eq!(after_only_variable(reused), None);
        let prefix = "subscription($r: ID!, $a: ID, $ab: ID) { roomEvents(roomId: $r, after: $a) { x(y: $ab) } }";
        assert_eq!(after_only_variable(prefix).as_deref(), Some("a"));
        assert_eq!(
            after_only_variable("subscription { roomEvents(roomId: \"x\") { x } }"),
            None
        );
        assert_eq!(
            after_only_variable("subscription { roomEvents(roomId: \"x\", after: \"y\") { x } }"),
            None
        );
    }

    fn added(body: &str) -> Arc<RoomEvent> {
        let id = |n: u8| crate::model::ObjectId::from_bytes([n; 12]);
        Arc::new(RoomEvent::MessageAdded(crate::model::Message {
            id: id(3).into(),
            room_id: id(2).into(),
            sender_id: id(1).into(),
            body: body.into(),
            client_id: None,
            created_at: chrono::DateTime::default(),
            edited_at: None,
            deleted_at: None,
            deleted_by: None,
            mentions: Vec::new(),
            seq: 1,
        }))
    }

    #[tokio::test]
    async fn renderings_are_shared_kept_only_while_needed_and_counted() {
        let schema = crate::graphql::build_schema(None);
        let renders = Arc::new(Renders::default());
        let query = "subscription { roomEvents(roomId: \"x\") { ... on MessageAdded { message { body } } } }";
        let operation = Operation::new(&mut Request::new(query), Caller::Anonymous)
            .expect("a document that parses");
        let (a, b) = (renders.join(operation.clone()), renders.join(operation));
        let count = |renders: &Renders| renders.renders.get();

        // A live event, held by the bus and by both subscribers: rendered once, kept.
        let live = added("hello");
        let bus_copy = live.clone();
        let first = a.payload(&schema, &live).await;
        let second = b.payload(&schema, &live).await;
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(
            &*first,
            r#"{"data":{"roomEvents":{"message":{"body":"hello"}}}}"#
        );
        assert_eq!(count(&renders), 1);
        assert_eq!(renders.bytes.load(Ordering::Relaxed), first.len());

        // An event only this subscriber holds (replayed from the store): rendered, not kept.
        let own = added("mine");
        a.payload(&schema, &own).await;
        a.payload(&schema, &own).await;
        assert_eq!(count(&renders), 3);
        assert_eq!(renders.bytes.load(Ordering::Relaxed), first.len());

        // Once every holder is done with an event, its rendering goes at the next one.
        drop((live, bus_copy));
        let next = added("next");
        let _held = next.clone();
        let payload = a.payload(&schema, &next).await;
        assert_eq!(renders.bytes.load(Ordering::Relaxed), payload.len());

        // The last subscriber of an operation takes its renderings with it.
        drop((a, b));
        assert_eq!(renders.bytes.load(Ordering::Relaxed), 0);
        assert!(renders.operations.lock().unwrap().is_empty());
    }
}

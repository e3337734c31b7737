//! Room events across instances through Redis pub/sub (`--redis-url`).
//!
//! Channel scheme: one channel per room, `confab:room:<room id>`, plus `confab:control`. Each
//! instance keeps one subscriber connection that pattern-subscribes to every room channel and
//! relays into its local bus, so a room needs no per-room Redis bookkeeping when sockets come
//! and go (the cost: every instance sees every room's events and drops those it has no
//! subscriber for, which the local bus does for free).
//!
//! An event is delivered to local subscribers first, then published with the instance's random
//! origin id; the relay skips its own origin, so each subscriber gets it once.
//!
//! Outages lose nothing that is stored: when the subscriber connection comes back, every local
//! feed resyncs from the store (as after a lag); when publishing failed, the instance asks every
//! other instance to do the same (`confab:control`) as soon as Redis takes its publishes again.
//! Local subscribers are served throughout. Typing indicators are not stored and may be lost.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{EventBus, LocalBus, Revocation, RoomFeed};
use crate::{
    config::ConfigError,
    model::{RoomEvent, RoomId},
};

const ROOM_PREFIX: &str = "confab:room:";
const CONTROL: &str = "confab:control";
/// How long one publish may take before Redis counts as down for this instance.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// While Redis is down, how often publishing is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often the relay checks its subscription connection is alive.
const PING_EVERY: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: u64,
    #[serde(default)]
    event: Option<RoomEvent>,
    /// "Events may have been lost: resync every feed."
    #[serde(default)]
    resync: bool,
    /// Sessions that ended (on `confab:control`).
    #[serde(default)]
    revoked: Option<Revocation>,
}

/// How long startup waits for Redis to answer its first PING.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Startup's first word with Redis: one connection and a PING within [`PROBE_TIMEOUT`]. An
/// unreachable Redis is then one line within seconds; the connection managers the bus, the
/// limiter and presence keep would retry with backoff for several seconds first.
pub async fn probe(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)
        .map_err(|e| ConfigError(format!("--redis-url is not a valid Redis URL: {e}")))?;
    let host = client.get_connection_info().addr().to_string();
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!("cannot reach Redis at {host}: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "cannot reach Redis at {host}: no answer in {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

pub struct RedisBus {
    local: LocalBus,
    origin: u64,
    publisher: redis::aio::ConnectionManager,
    /// Whether the relay's subscription is up.
    subscribed: Arc<AtomicBool>,
    /// When publishing failed; until it works again, the other instances must be told to
    /// resync (a recovery task does that).
    failed_at: Arc<Mutex<Option<Instant>>>,
}

impl RedisBus {
    /// Connects (failing at startup, in one line, when Redis does not answer) and starts the
    /// relay from Redis into this instance's local bus.
    pub async fn connect(url: &str) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url)
            .map_err(|e| ConfigError(format!("--redis-url is not a valid Redis URL: {e}")))?;
        let host = client.get_connection_info().addr().to_string();
        let connecting = client.get_connection_manager();
        let publisher = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| anyhow::anyhow!("cannot reach Redis at {host}: no answer in 10 s"))?
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at {host}: {e}"))?;
        let bus = Arc::new(Self {
            local: LocalBus::new(),
            origin: rand::random(),
            publisher,
            subscribed: Arc::new(AtomicBool::new(false)),
            failed_at: Arc::default(),
        });
        let relay = relay(
            client,
            bus.local.clone(),
            bus.origin,
            bus.subscribed.clone(),
        );
        tokio::spawn(relay);
        Ok(bus)
    }

    /// Marks publishing as failed and, the first time, starts telling the other instances to
    /// resync as soon as Redis takes a publish again, even if no event comes to try with.
    fn publishing_failed(&self) {
        let mut failed = self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
        let first = failed.is_none();
        *failed = Some(Instant::now());
        if !first {
            return;
        }
        tracing::warn!(
            "cannot publish to Redis; local subscribers are still served, others resync when it is back"
        );
        let publisher = self.publisher.clone();
        let failed_at = self.failed_at.clone();
        let resync = Envelope {
            origin: self.origin,
            event: None,
            resync: true,
            revoked: None,
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RETRY_EVERY).await;
                if send(&publisher, CONTROL, &resync).await {
                    *failed_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    tracing::info!(
                        "Redis takes publishes again; other instances resync from the store"
                    );
                    return;
                }
            }
        });
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, event: RoomEvent) {
        let channel = format!("{ROOM_PREFIX}{}", event.room_id().to_hex());
        let envelope = Envelope {
            origin: self.origin,
            event: Some(event.clone()),
            resync: false,
            revoked: None,
        };
        self.local.deliver(Arc::new(event));
        if self
            .failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            // Down: the recovery task tells the others to resync once it is back; meanwhile
            // no event waits on Redis.
            return;
        }
        if !send(&self.publisher, &channel, &envelope).await {
            self.publishing_failed();
        }
    }

    fn subscribe(&self, room: RoomId) -> RoomFeed {
        self.local.subscribe(room)
    }

    /// Told locally first, then to the others. When Redis does not take it, the others are
    /// told to recheck every session once it does (the same recovery as for lost events), and
    /// until then their session caches expire entries within a minute.
    async fn revoke(&self, revocation: Revocation) {
        self.local.deliver_revocation(revocation.clone());
        let envelope = Envelope {
            origin: self.origin,
            event: None,
            resync: false,
            revoked: Some(revocation),
        };
        if !send(&self.publisher, CONTROL, &envelope).await {
            self.publishing_failed();
        }
    }

    fn revocations(&self) -> tokio::sync::broadcast::Receiver<Arc<Revocation>> {
        self.local.revocations()
    }

    fn health(&self) -> &'static str {
        let publishing = self
            .failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none();
        if publishing && self.subscribed.load(Ordering::Relaxed) {
            "redis"
        } else {
            "redis-down"
        }
    }
}

async fn send(
    publisher: &redis::aio::ConnectionManager,
    channel: &str,
    envelope: &Envelope,
) -> bool {
    let Ok(payload) = serde_json::to_vec(envelope) else {
        return false;
    };
    let mut connection = publisher.clone();
    let publish = connection.publish::<_, _, i64>(channel, payload);
    matches!(
        tokio::time::timeout(PUBLISH_TIMEOUT, publish).await,
        Ok(Ok(_))
    )
}

/// Relays other instances' events into the local bus, reconnecting for as long as it runs.
async fn relay(client: redis::Client, local: LocalBus, origin: u64, subscribed: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        if let Ok(mut pubsub) = client.get_async_pubsub().await {
            let ready = pubsub.psubscribe(format!("{ROOM_PREFIX}*")).await.is_ok()
                && pubsub.subscribe(CONTROL).await.is_ok();
            if ready {
                subscribed.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
                if connected_before {
                    tracing::info!(
                        "Redis subscription is back; resyncing subscribers from the store"
                    );
                    local.resync_all();
                }
                connected_before = true;
                relay_until_lost(pubsub, &local, origin).await;
                subscribed.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "lost the Redis subscription; local subscribers are still served; reconnecting"
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Relays until the subscription connection is lost. It is pinged, so a connection that died
/// quietly is noticed within a ping, not at the next message that never comes.
async fn relay_until_lost(pubsub: redis::aio::PubSub, local: &LocalBus, origin: u64) {
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return };
                let Ok(envelope) = serde_json::from_slice::<Envelope>(message.get_payload_bytes()) else {
                    tracing::warn!(channel = message.get_channel_name(), "ignoring a message that is not Confab's");
                    continue;
                };
                if envelope.origin == origin {
                    continue;
                }
                if envelope.resync {
                    local.resync_all();
                } else if let Some(revocation) = envelope.revoked {
                    local.deliver_revocation(revocation);
                } else if let Some(event) = envelope.event {
                    local.deliver(Arc::new(event));
                }
            }
            _ = ping.tick() => {
                let alive = tokio::time::timeout(PUBLISH_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(alive, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

//! `confab backup` and `confab restore`: a copy taken while the server takes messages holds
//! every message acknowledged before it began, and what it refuses to do.

use std::{
    path::Path,
    process::{Child, Command, Output},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use serde_json::{Value, json};

use crate::process::{gql, start_with};

fn confab() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_confab"));
    command
        .env_remove("CONFAB_DATABASE_URL")
        .env_remove("CONFAB_JWT_SECRET");
    command
}

/// `confab ARGS --database-url sqlite://DATABASE`, run to its end.
fn run(database: &str, args: &[&str]) -> Output {
    confab()
        .args(args)
        .args(["--database-url", database])
        .output()
        .expect("confab runs")
}

async fn run_async(database: &str, args: &[&str]) -> Output {
    let (database, args) = (
        database.to_owned(),
        args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&database, &args)
    })
    .await
    .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A refusal: exit code 2, one line on stderr (returned), nothing on stdout.
fn refused(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{}", text(output));
    assert!(output.stdout.is_empty(), "{}", text(output));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A server killed when the test ends, even by a failed assertion.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every message id of a room, oldest first, page by page.
async fn history(url: &str, token: &str, room: &str) -> Vec<String> {
    let query = "query($r: ID!, $a: String) { messages(roomId: $r, first: 100, after: $a) {
        edges { node { id } } pageInfo { hasNextPage endCursor } } }";
    let mut ids = Vec::new();
    let mut after = Value::Null;
    for _ in 0..1000 {
        let data = gql(url, Some(token), query, json!({"r": room, "a": after})).await;
        let page = &data["messages"];
        for edge in page["edges"].as_array().expect("edges") {
            ids.push(edge["node"]["id"].as_str().expect("an id").to_owned());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return ids;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    panic!("more than 1000 pages of history");
}

/// Waits (in count, not time) until `acked` holds at least `n` ids.
async fn until_acked(acked: &Mutex<Vec<String>>, n: usize) {
    for _ in 0..6000 {
        if acked.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} messages acknowledged after 6000 looks");
}

/// The backup is taken while four senders keep sending; the database is then restored from it
/// on the stopped server. The restored history is what the server had committed up to one
/// point (a prefix of the history in id order, which is commit order), holding every message
/// acknowledged before the backup began and not the ones sent after it ended. A plain copy of
/// `confab.db` misses the commits still in its WAL, and fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_every_message_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("data").join("confab.db");
    let url_of_db = format!("sqlite://{}", database.display());
    let saved = dir.path().join("saved.db");
    let saved_arg = saved.display().to_string();
    let (server, url) = start_with(&url_of_db, &[]);
    let mut server = Running(server);

    let register =
        "mutation { register(username: \"keeper\", password: \"backed up twice\") { token } }";
    let token = gql(&url, None, register, json!({})).await["register"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let create = "mutation { createRoom(name: \"archive\") { id } }";
    let room = gql(&url, Some(&token), create, json!({})).await["createRoom"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A server that ran before: stopped cleanly, its file holds everything so far (the schema,
    // the account, the room), so only what comes next is in the WAL alone.
    let stopped = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    assert!(server.0.wait().expect("exit status").success());
    let (next, url) = start_with(&url_of_db, &[]);
    server = Running(next);

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|sender| {
            let (url, token, room) = (url.clone(), token.clone(), room.clone());
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                let send =
                    "mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }";
                for i in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let body = format!("sender {sender}, message {i}");
                    let data = gql(&url, Some(&token), send, json!({"r": room, "b": body})).await;
                    let id = data["sendMessage"]["id"].as_str().unwrap().to_owned();
                    acked.lock().unwrap().push(id);
                }
            })
        })
        .collect();

    until_acked(&acked, 200).await;
    let before: Vec<String> = acked.lock().unwrap().clone();
    let backup = run_async(&url_of_db, &["backup", &saved_arg]).await;
    assert!(backup.status.success(), "{}", text(&backup));
    assert!(
        text(&backup).contains("schema version"),
        "{}",
        text(&backup)
    );
    let acked_by_its_end = acked.lock().unwrap().len();
    // The senders went on: the backup did not stop the server's writes.
    until_acked(&acked, acked_by_its_end + 100).await;

    // Restoring under a running server is refused, and changes nothing.
    let line = refused(&run_async(&url_of_db, &["restore", &saved_arg]).await);
    assert!(line.contains("stop it first"), "{line}");
    assert!(line.contains(&format!("pid {}", server.0.id())), "{line}");

    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await.unwrap();
    }
    let all = history(&url, &token, &room).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().all(|id| all.contains(id)),
        "the server lost none"
    );
    server.0.kill().unwrap();
    server.0.wait().unwrap();

    // The backup is one consistent, self-contained file.
    {
        let copy = rusqlite::Connection::open_with_flags(
            &saved,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let check: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let mode: String = copy
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
    }

    let restore = run_async(&url_of_db, &["restore", &saved_arg]).await;
    assert!(restore.status.success(), "{}", text(&restore));
    let (server, url) = start_with(&url_of_db, &[]);
    let _server = Running(server);
    let restored = history(&url, &token, &room).await;
    assert_eq!(
        restored[..],
        all[..restored.len()],
        "the backup is the history up to one commit"
    );
    let missing: Vec<&String> = before.iter().filter(|id| !restored.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} messages acknowledged before the backup began are missing",
        missing.len(),
        before.len()
    );
    // At most one send per sender was in flight when the backup ended: everything after is gone.
    assert!(
        restored.len() <= acked_by_its_end + 4 && restored.len() < all.len(),
        "restored {} of {}, {} acknowledged when the backup ended",
        restored.len(),
        all.len(),
        acked_by_its_end
    );
}

/// Makes a Confab database with one account at `database`, as a stopped server leaves it.
async fn a_database(database: &Path) {
    let store = confab::store::sqlite::SqliteStore::open(database)
        .await
        .expect("create the database");
    confab::store::UserStore::create_user(&store, "ada", "hash")
        .await
        .unwrap();
}

#[tokio::test]
async fn backup_and_restore_refuse_what_they_cannot_do_and_change_nothing() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("confab.db");
    let db = format!("sqlite://{}", database.display());
    a_database(&database).await;
    let saved = dir.path().join("saved.db");
    let saved_arg = saved.display().to_string();

    // Stores it does not copy.
    let line = refused(&run("mongodb://127.0.0.1:1/chat", &["backup", &saved_arg]));
    assert!(line.contains("`confab backup` is for SQLite"), "{line}");
    assert!(line.contains("mongodump --oplog"), "{line}");
    let line = refused(&run("mongodb://127.0.0.1:1/chat", &["restore", &saved_arg]));
    assert!(line.contains("mongorestore"), "{line}");
    let line = refused(&run("sqlite::memory:", &["backup", &saved_arg]));
    assert!(line.contains("in memory"), "{line}");
    // No database there.
    let elsewhere = format!("sqlite://{}", dir.path().join("none.db").display());
    let line = refused(&run(&elsewhere, &["backup", &saved_arg]));
    assert!(line.contains("no database at"), "{line}");
    assert!(!dir.path().join("none.db").exists());
    assert!(!saved.exists());
    // No backup there.
    let line = refused(&run(&db, &["restore", &saved_arg]));
    assert!(line.contains("no backup at"), "{line}");

    // No silent overwrite.
    let made = run(&db, &["backup", &saved_arg]);
    assert!(made.status.success(), "{}", text(&made));
    // It holds password hashes: for its owner alone.
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::write(&saved, "an earlier backup").unwrap();
    let line = refused(&run(&db, &["backup", &saved_arg]));
    assert!(line.contains("--force"), "{line}");
    assert_eq!(std::fs::read(&saved).unwrap(), b"an earlier backup");
    // Not onto the database itself, even when forced.
    let itself = database.display().to_string();
    let line = refused(&run(&db, &["backup", &itself, "--force"]));
    assert!(line.contains("the database itself"), "{line}");

    let original = std::fs::read(&database).unwrap();
    // Restoring what is not a Confab backup: a text file, a damaged copy, a newer schema.
    let line = refused(&run(&db, &["restore", &saved_arg]));
    assert!(line.contains("not a SQLite database"), "{line}");
    assert!(line.contains(&saved_arg), "{line}");
    let made = run(&db, &["backup", &saved_arg, "--force"]);
    assert!(made.status.success(), "{}", text(&made));
    let good = std::fs::read(&saved).unwrap();
    let mut damaged = good.clone();
    let page = 4096;
    assert!(damaged.len() > 3 * page, "{} bytes", damaged.len());
    damaged[page + 100..2 * page].fill(0x5a);
    std::fs::write(&saved, &damaged).unwrap();
    let line = refused(&run(&db, &["restore", &saved_arg]));
    assert!(line.contains("damaged"), "{line}");
    std::fs::write(&saved, &good).unwrap();
    rusqlite::Connection::open(&saved)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let line = refused(&run(&db, &["restore", &saved_arg]));
    assert!(line.contains("schema version 99, newer"), "{line}");
    assert_eq!(std::fs::read(&database).unwrap(), original);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("restoring") || name.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The good backup restores, with the mode of the file it replaces.
    std::fs::write(&saved, &good).unwrap();
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o640)).unwrap();
    let restored = run(&db, &["restore", &saved_arg]);
    assert!(restored.status.success(), "{}", text(&restored));
    let mode = std::fs::metadata(&database).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

/// Without --jwt-secret the server signs with the key it keeps beside the database: a backup
/// takes it along (mode 0600), and a restore puts it back where it is missing, never over
/// another key.
#[tokio::test]
async fn the_generated_signing_key_is_backed_up_and_restored_where_missing() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("data").join("confab.db");
    let db = format!("sqlite://{}", database.display());
    a_database(&database).await;
    let key = dir.path().join("data").join("jwt-secret");
    std::fs::write(&key, "k".repeat(64)).unwrap();
    let saved = dir.path().join("saved.db");
    let saved_arg = saved.display().to_string();
    let saved_key = dir.path().join("saved.db.jwt-secret");

    let made = run(&db, &["backup", &saved_arg]);
    assert!(made.status.success(), "{}", text(&made));
    assert!(
        text(&made).contains("saved.db.jwt-secret"),
        "{}",
        text(&made)
    );
    assert_eq!(std::fs::read_to_string(&saved_key).unwrap(), "k".repeat(64));
    let mode = std::fs::metadata(&saved_key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Its key is not overwritten either.
    let line = refused(&run(&db, &["backup", &saved_arg]));
    assert!(line.contains("exists"), "{line}");

    // A lost data directory: the key comes back.
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let restored = run(&db, &["restore", &saved_arg]);
    assert!(restored.status.success(), "{}", text(&restored));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "k".repeat(64));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A key replaced since is kept, and the command says so.
    std::fs::write(&key, "n".repeat(64)).unwrap();
    let restored = run(&db, &["restore", &saved_arg]);
    assert!(restored.status.success(), "{}", text(&restored));
    assert!(
        text(&restored).contains("kept the signing key"),
        "{}",
        text(&restored)
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "n".repeat(64));

    // With --jwt-secret, there is no key file to copy, and the command says where the key is.
    let other = dir.path().join("other.db").display().to_string();
    let made = confab()
        .args(["--jwt-secret", &"s".repeat(40), "backup", &other])
        .args(["--database-url", &db])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    assert!(text(&made).contains("--jwt-secret"), "{}", text(&made));
    assert!(!dir.path().join("other.db.jwt-secret").exists());
}

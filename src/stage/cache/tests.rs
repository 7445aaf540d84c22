use super::*;
use crate::stage::LocalStage;

fn stage(most: u64) -> (tempfile::TempDir, Arc<LocalStage>, CachedStage) {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(LocalStage::new(dir.path().join("stage")));
    let cached = CachedStage::new(inner.clone(), &dir.path().join("cache"), most);
    (dir, inner, cached)
}

/// The file the cache holds for `key`, in whichever generation.
fn local(cached: &CachedStage, key: &str) -> Option<PathBuf> {
    let own = cached.own().unwrap();
    let generations = cached.generations.lock().unwrap().newest_first();
    generations
        .into_iter()
        .map(|n| generation(own, n).join(file_name(key)))
        .find(|path| path.exists())
}

const KEY: &str = "staged/o2/2026-11-20/alice@contoso.com/ab.eml";

/// The `n`th of a mailbox's staged messages.
fn key(n: usize) -> String {
    format!("staged/o2/2026-11-20/a@c.com/{n:04}.eml")
}

#[tokio::test]
async fn a_message_staged_here_is_read_once_from_the_cache_then_from_the_stage() {
    let (dir, inner, cached) = stage(1 << 20);
    assert_eq!(
        cached.put_new(KEY, b"rendered").await.unwrap(),
        Created::New
    );
    assert_eq!(cached.held(), 8);
    assert!(local(&cached, KEY).is_some());
    // The stage holds it too: the cache is never the only copy.
    assert_eq!(inner.get(KEY).await.unwrap().unwrap(), b"rendered");
    // What the cache answers is its own copy: change the stage's behind its back.
    std::fs::write(dir.path().join("stage").join(KEY), b"changed!").unwrap();
    assert_eq!(cached.get(KEY).await.unwrap().unwrap(), b"rendered");
    assert_eq!(cached.held(), 0);
    assert!(local(&cached, KEY).is_none());
    assert_eq!(cached.get(KEY).await.unwrap().unwrap(), b"changed!");
}

#[tokio::test]
async fn only_messages_this_process_created_are_kept() {
    let (dir, inner, cached) = stage(1 << 20);
    inner.put_new(KEY, b"staged before").await.unwrap();
    assert_eq!(
        cached.put_new(KEY, b"rendered again").await.unwrap(),
        Created::AlreadyExists
    );
    assert_eq!(cached.held(), 0);
    assert_eq!(cached.get(KEY).await.unwrap().unwrap(), b"staged before");
    // State is never cached, and reading makes nothing on disk.
    cached
        .put_new("days/o2/2026-11-20.json", b"{}")
        .await
        .unwrap();
    cached.put("checkpoints/o2.json", b"{}").await.unwrap();
    assert_eq!(cached.held(), 0);
    assert!(!dir.path().join("cache").exists());
}

#[tokio::test]
async fn the_oldest_go_first_when_the_cache_is_full() {
    let (_dir, _inner, cached) = stage(25);
    for n in 0..4 {
        cached.put_new(&key(n), &[b'x'; 10]).await.unwrap();
    }
    assert_eq!(cached.held(), 20);
    let kept: Vec<bool> = (0..4).map(|n| local(&cached, &key(n)).is_some()).collect();
    assert_eq!(kept, [false, false, true, true]);
    // Larger than the whole cache: staged, not kept.
    let big = "staged/o2/2026-11-20/a@c.com/big.eml";
    cached.put_new(big, &[b'x'; 26]).await.unwrap();
    assert_eq!(cached.held(), 20);
    assert!(local(&cached, big).is_none());
    // Every message reads, from wherever it is.
    for n in 0..4 {
        assert_eq!(cached.get(&key(n)).await.unwrap().unwrap(), [b'x'; 10]);
    }
    assert_eq!(cached.get(big).await.unwrap().unwrap(), [b'x'; 26]);
}

#[tokio::test]
async fn a_day_larger_than_the_cache_keeps_its_newest_eighths_and_nothing_else() {
    let (_dir, inner, cached) = stage(800);
    for n in 0..1000 {
        cached.put_new(&key(n), &[b'x'; 10]).await.unwrap();
    }
    // What the cache remembers is one entry per generation, not per message.
    let live = cached.generations.lock().unwrap().live.len() as u64;
    assert!(live <= GENERATIONS, "{live} generations");
    assert!(cached.held() <= 800 && cached.held() > 800 - 100);
    // On disk, exactly the messages it counts: the generations let go are removed.
    let files = walkdir(cached.own().unwrap());
    assert_eq!(files as u64 * 10, cached.held());
    assert!(local(&cached, &key(999)).is_some());
    assert!(local(&cached, &key(0)).is_none());
    // Read back: the newest from the cache, the rest from the stage, all of them whole.
    for n in (0..1000).rev() {
        assert_eq!(cached.get(&key(n)).await.unwrap().unwrap(), [b'x'; 10]);
    }
    assert_eq!(cached.held(), 0);
    assert_eq!(walkdir(cached.own().unwrap()), 0);
    assert_eq!(inner.get(&key(0)).await.unwrap().unwrap(), [b'x'; 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_at_once_on_a_full_cache_leave_no_file_it_does_not_count() {
    let (_dir, _inner, cached) = stage(200);
    let cached = Arc::new(cached);
    let writers = (0..2000).map(|n| {
        let cached = cached.clone();
        tokio::spawn(async move { cached.put_new(&key(n), &[b'x'; 10]).await.unwrap() })
    });
    for writer in futures::future::join_all(writers).await {
        writer.unwrap();
    }
    assert!(cached.held() <= 200);
    assert_eq!(walkdir(cached.own().unwrap()) as u64 * 10, cached.held());
}

#[tokio::test]
async fn generations_read_to_the_end_are_let_go() {
    let (_dir, _inner, cached) = stage(800);
    for day in 0..5 {
        let keys: Vec<String> = (0..30).map(|n| key(day * 100 + n)).collect();
        for key in &keys {
            cached.put_new(key, &[b'x'; 10]).await.unwrap();
        }
        for key in &keys {
            assert_eq!(cached.get(key).await.unwrap().unwrap(), [b'x'; 10]);
        }
    }
    // A generation was made for every 100 bytes or so, each read to its end: only the
    // newest is left, and of the folders only its own.
    let live = cached.generations.lock().unwrap().newest_first();
    assert_eq!(live.len(), 1, "{live:?}");
    let folders = std::fs::read_dir(cached.own().unwrap())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(folders, 1);
    assert_eq!(cached.held(), 0);
}

/// The message files under `dir` (the lock file not counted).
fn walkdir(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| match p.is_dir() {
            true => walkdir(&p),
            false => usize::from(p.file_name().unwrap() != LOCK),
        })
        .sum()
}

#[tokio::test]
async fn what_a_process_gone_left_is_removed_and_a_live_ones_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Stage> = Arc::new(LocalStage::new(dir.path().join("stage")));
    let root = dir.path().join("cache");
    // A daemon that is still running (its lock held) and one that died mid-write.
    let live = CachedStage::new(inner.clone(), &root, 100);
    live.put_new(KEY, b"live").await.unwrap();
    let gone = root.join("p1-1");
    std::fs::create_dir_all(gone.join("staged")).unwrap();
    std::fs::write(gone.join(LOCK), b"").unwrap();
    std::fs::write(gone.join("staged/partial.eml"), b"par").unwrap();
    let half_made = root.join("p2-2");
    std::fs::create_dir_all(&half_made).unwrap();

    let next = CachedStage::new(inner, &root, 100);
    let other = "staged/o2/2026-11-20/bob@contoso.com/cd.eml";
    next.put_new(other, b"next").await.unwrap();
    assert!(!gone.exists());
    assert!(!half_made.exists());
    assert!(
        local(&live, KEY).is_some(),
        "a running daemon's cache is its own"
    );
    assert_eq!(live.get(KEY).await.unwrap().unwrap(), b"live");
    assert_eq!(next.get(other).await.unwrap().unwrap(), b"next");
}

#[tokio::test]
async fn a_cache_that_cannot_be_written_reads_from_the_stage() {
    let (dir, _inner, cached) = stage(1 << 20);
    // A file where the cache's folder goes.
    std::fs::write(dir.path().join("cache"), b"not a directory").unwrap();
    cached.put_new(KEY, b"rendered").await.unwrap();
    assert_eq!(cached.held(), 0);
    assert_eq!(cached.get(KEY).await.unwrap().unwrap(), b"rendered");
}

#[tokio::test]
async fn a_cached_file_lost_underneath_is_read_from_the_stage() {
    let (_dir, _inner, cached) = stage(1 << 20);
    cached.put_new(KEY, b"rendered").await.unwrap();
    std::fs::remove_file(local(&cached, KEY).unwrap()).unwrap();
    assert_eq!(cached.get(KEY).await.unwrap().unwrap(), b"rendered");
}

//! The idle timeout, backpressure, many flows at once, an idle pipe's size.
use super::*;
use std::sync::atomic::AtomicBool;

/// 5) No byte either way for the idle time resets both ends; bytes keep it alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_resets_both_ends() {
    let t = tunnel().await;
    let idle = Duration::from_millis(300);
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        ..
    } = flow(&t, Some(idle), None).await;
    // Activity every 100 ms for 600 ms (twice the limit) keeps the flow alive.
    for i in 0..6u8 {
        if i % 2 == 0 {
            app.write_all(&[i]).await.unwrap();
            let mut b = [0u8; 1];
            timeout(T, dest.read_exact(&mut b)).await.unwrap().unwrap();
        } else {
            dest.write_all(&[i]).await.unwrap();
            let mut b = [0u8; 1];
            timeout(T, app.read_exact(&mut b)).await.unwrap().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!cap.is_finished());
    let quiet = std::time::Instant::now();
    expect_reset(&mut app).await;
    expect_reset(&mut dest).await;
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    let c = summary(cap).await;
    assert_eq!(c.outcome, IDLE_TIMEOUT_OUTCOME);
    assert!(c.duration_ms >= 800, "{c:?}");
    assert_eq!(
        summary(del).await.outcome,
        "peer reset the stream: 0x7 (idle timeout)"
    );
}

/// 6) Backpressure: while the destination does not read, the client's writes stop after
/// a bounded amount (the kernel buffers, the stream's flow-control window, one read per
/// pipe direction); then everything arrives once it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_blocks_the_writer() {
    const TOTAL: u64 = 48 << 20;
    const BOUND: u64 = 32 << 20;
    let t = tunnel().await;
    let Flow {
        app,
        mut dest,
        cap,
        del,
        cap_ctl,
        ..
    } = flow(&t, None, None).await;
    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, done) = (written.clone(), done.clone());
        tokio::spawn(async move {
            let mut app = app;
            let chunk = vec![7u8; 64 * 1024];
            while written.load(Relaxed) < TOTAL {
                app.write_all(&chunk).await.unwrap();
                written.fetch_add(chunk.len() as u64, Relaxed);
            }
            app.shutdown().await.unwrap();
            done.store(true, Relaxed);
            app
        })
    };
    // Wait until the writer has made no progress for 300 ms.
    let mut last = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = written.load(Relaxed);
        if now == last && now > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && now < TOTAL,
            "the writer never stalled ({now} bytes written)"
        );
        last = now;
    }
    println!(
        "writer stalled after {} KiB; {} KiB went into the stream",
        last >> 10,
        cap_ctl.bytes_to_peer() >> 10
    );
    assert!(
        last < BOUND,
        "{last} bytes written before the writer stalled"
    );
    assert!(!done.load(Relaxed));
    // The destination reads now: everything arrives, exactly.
    let mut n = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let r = timeout(T, dest.read(&mut buf)).await.unwrap().unwrap();
        if r == 0 {
            break;
        }
        assert!(buf[..r].iter().all(|&b| b == 7));
        n += r as u64;
    }
    assert_eq!(n, TOTAL);
    let app = timeout(T, writer).await.unwrap().unwrap();
    drop(dest);
    drop(app);
    let c = summary(cap).await;
    assert_eq!(c.bytes_to_peer, TOTAL);
    let _ = summary(del).await;
}

/// 7) 200 flows at once, each a request and a reply with a FIN each way: all complete,
/// none waits for an EOF that does not come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_short_flows_all_complete() {
    let t = tunnel().await;
    let mut flows = Vec::new();
    for _ in 0..200 {
        flows.push(flow(&t, None, None).await);
    }
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (
        i,
        Flow {
            mut app,
            mut dest,
            cap,
            del,
            ..
        },
    ) in flows.into_iter().enumerate()
    {
        let req = format!("request {i}");
        let rep = format!("reply {i}").repeat(100);
        let client = tokio::spawn({
            let (req, rep) = (req.clone(), rep.clone());
            async move {
                app.write_all(req.as_bytes()).await.unwrap();
                app.shutdown().await.unwrap();
                let mut got = Vec::new();
                app.read_to_end(&mut got).await.unwrap();
                assert_eq!(got, rep.as_bytes());
            }
        });
        let server = tokio::spawn(async move {
            let mut got = Vec::new();
            dest.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, req.as_bytes());
            dest.write_all(rep.as_bytes()).await.unwrap();
            drop(dest); // close() with nothing unread: a FIN
        });
        tasks.push(async move {
            client.await.unwrap();
            server.await.unwrap();
            let (c, d) = (cap.await.unwrap(), del.await.unwrap());
            assert_eq!(c.outcome, CLOSED_OUTCOME);
            assert_eq!(d.outcome, CLOSED_OUTCOME);
        });
    }
    let all = async {
        for task in tasks {
            task.await;
        }
    };
    timeout(Duration::from_secs(10), all)
        .await
        .expect("some flows did not complete");
    println!(
        "200 flows completed in {} ms",
        started.elapsed().as_millis()
    );
}

/// An idle flow's pipe is small: its future (what the task allocates) is well under
/// 2 KiB, and it holds no data buffer while nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pipe_is_small() {
    let t = tunnel().await;
    let (_app, tcp) = tcp_pair().await;
    let (send, recv) = t.client.open_bi().await.unwrap();
    let fut = run_pipe(
        tcp,
        send,
        recv,
        Bytes::new(),
        Bytes::new(),
        t.out.clone(),
        Some(Duration::from_secs(60)),
        FlowCtl::new(),
    );
    let size = std::mem::size_of_val(&fut);
    println!("run_pipe future: {size} bytes");
    assert!(size < 1536, "run_pipe's future is {size} bytes");
    drop(fut);
}

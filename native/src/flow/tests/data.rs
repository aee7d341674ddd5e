//! Bytes: exact copies both ways, half-closes, the bytes that go first.
use super::*;

/// 1) Exact bytes both ways at once, 8 MiB each, plus the counters (header not counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_8_mib_each_way_exactly() {
    const N: usize = 8 << 20;
    let t = tunnel().await;
    let Flow {
        app,
        dest,
        cap,
        del,
        cap_ctl,
        del_ctl,
    } = flow(&t, None, None).await;
    let up = pattern(N, 1);
    let down = pattern(N, 2);
    let (up_sum, down_sum) = (sha256(&up), sha256(&down));
    let started = std::time::Instant::now();
    let client = tokio::spawn(async move {
        let (mut r, mut w) = app.into_split();
        let writer = async move {
            w.write_all(&up).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let reader = async { r.read_to_end(&mut got).await.unwrap() };
        tokio::join!(writer, reader);
        got
    });
    let server = tokio::spawn(async move {
        let (mut r, mut w) = dest.into_split();
        let writer = async move {
            w.write_all(&down).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let reader = async { r.read_to_end(&mut got).await.unwrap() };
        tokio::join!(writer, reader);
        got
    });
    let got_down = timeout(Duration::from_secs(30), client)
        .await
        .unwrap()
        .unwrap();
    let got_up = timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "copied 2 x 8 MiB in {:.0} ms: {:.0} MiB/s each way",
        secs * 1e3,
        8.0 / secs
    );
    assert_eq!(got_up.len(), N);
    assert_eq!(got_down.len(), N);
    assert_eq!(sha256(&got_up), up_sum);
    assert_eq!(sha256(&got_down), down_sum);
    let (c, d) = (summary(cap).await, summary(del).await);
    assert_eq!(c.outcome, CLOSED_OUTCOME);
    assert_eq!(d.outcome, CLOSED_OUTCOME);
    assert_eq!((c.bytes_to_peer, c.bytes_from_peer), (N as u64, N as u64));
    assert_eq!((d.bytes_to_peer, d.bytes_from_peer), (N as u64, N as u64));
    assert_eq!(
        (cap_ctl.bytes_to_peer(), del_ctl.bytes_from_peer()),
        (N as u64, N as u64)
    );
    assert_eq!(t.out.bytes_sent.load(Relaxed), N as u64);
    assert_eq!(t.out.bytes_received.load(Relaxed), N as u64);
    assert_eq!(t.inb.bytes_sent.load(Relaxed), N as u64);
    assert_eq!(t.inb.bytes_received.load(Relaxed), N as u64);
}

/// Throughput on loopback, one direction, compared with the bare QUIC stream:
/// `cargo test --release --lib flow::tests::data::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run it in release"]
async fn throughput() {
    const N: usize = 256 << 20;
    let t = tunnel().await;
    let chunk = Bytes::from(pattern(64 * 1024, 3));
    // The bare stream: quinn's own copy, no TCP.
    let (mut send, _r) = t.client.open_bi().await.unwrap();
    let started = std::time::Instant::now();
    let writer = tokio::spawn({
        let chunk = chunk.clone();
        async move {
            for _ in 0..N / chunk.len() {
                send.write_chunk(chunk.clone()).await.unwrap();
            }
            send.finish().unwrap();
            send
        }
    });
    let (_s, mut recv) = t.server.accept_bi().await.unwrap();
    let mut n = 0;
    while let Some(c) = recv.read_chunk(usize::MAX, true).await.unwrap() {
        n += c.bytes.len();
    }
    let _send = writer.await.unwrap();
    assert_eq!(n, N);
    let bare = started.elapsed().as_secs_f64();
    // The same through two pipes and four TCP sockets.
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        ..
    } = flow(&t, None, None).await;
    let started = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..N / chunk.len() {
            app.write_all(&chunk).await.unwrap();
        }
        app.shutdown().await.unwrap();
        app
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0;
    loop {
        let r = dest.read(&mut buf).await.unwrap();
        if r == 0 {
            break;
        }
        n += r;
    }
    let piped = started.elapsed().as_secs_f64();
    assert_eq!(n, N);
    drop(dest);
    drop(writer.await.unwrap());
    let _ = (summary(cap).await, summary(del).await);
    let mib = (N >> 20) as f64;
    println!(
        "bare stream: {:.0} MiB/s; TCP -> pipe -> QUIC -> pipe -> TCP: {:.0} MiB/s",
        mib / bare,
        mib / piped
    );
}

/// 2a) The client half-closes first and still gets the whole reply after it, then EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_keeps_the_reply_flowing() {
    let t = tunnel().await;
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        ..
    } = flow(&t, None, None).await;
    app.write_all(b"request").await.unwrap();
    app.shutdown().await.unwrap();
    let (got, r) = read_all(&mut dest).await;
    r.unwrap();
    assert_eq!(got, b"request");
    // The destination answers after the client's FIN, in two writes some time apart.
    dest.write_all(b"reply ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    dest.write_all(b"after FIN").await.unwrap();
    dest.shutdown().await.unwrap();
    let (got, r) = read_all(&mut app).await;
    r.unwrap();
    assert_eq!(got, b"reply after FIN");
    assert_eq!(summary(cap).await.outcome, CLOSED_OUTCOME);
    assert_eq!(summary(del).await.outcome, CLOSED_OUTCOME);
}

/// 2b) The mirror: the destination half-closes first, the client still sends afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_half_close_keeps_the_request_flowing() {
    let t = tunnel().await;
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        ..
    } = flow(&t, None, None).await;
    dest.write_all(b"banner").await.unwrap();
    dest.shutdown().await.unwrap();
    let (got, r) = read_all(&mut app).await;
    r.unwrap();
    assert_eq!(got, b"banner");
    app.write_all(b"late ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.write_all(b"data").await.unwrap();
    app.shutdown().await.unwrap();
    let (got, r) = read_all(&mut dest).await;
    r.unwrap();
    assert_eq!(got, b"late data");
    let (c, d) = (summary(cap).await, summary(del).await);
    assert_eq!(
        (c.outcome.as_str(), c.bytes_to_peer, c.bytes_from_peer),
        (CLOSED_OUTCOME, 9, 6)
    );
    assert_eq!(
        (d.outcome.as_str(), d.bytes_to_peer, d.bytes_from_peer),
        (CLOSED_OUTCOME, 6, 9)
    );
}

/// `to_tcp_first` (payload that came with the header) reaches the destination before the
/// rest of the stream and counts as payload; a FIN each way closes the flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_bytes_go_first() {
    let t = tunnel().await;
    let (mut send, mut recv) = t.client.open_bi().await.unwrap();
    send.write_all(b"stream data").await.unwrap();
    send.finish().unwrap();
    let (s, r) = timeout(T, t.server.accept_bi()).await.unwrap().unwrap();
    let (tcp, mut dest) = tcp_pair().await;
    let traffic = Arc::new(Traffic::default());
    let del = tokio::spawn(run_pipe(
        tcp,
        s,
        r,
        Bytes::new(),
        Bytes::from_static(b"leftover, "),
        traffic.clone(),
        None,
        FlowCtl::new(),
    ));
    dest.write_all(b"answer").await.unwrap();
    dest.shutdown().await.unwrap();
    let (got, r) = read_all(&mut dest).await;
    r.unwrap();
    assert_eq!(got, b"leftover, stream data");
    let answer = timeout(T, recv.read_to_end(100)).await.unwrap().unwrap();
    assert_eq!(answer, b"answer");
    let d = summary(del).await;
    assert_eq!(
        (d.outcome.as_str(), d.bytes_to_peer, d.bytes_from_peer),
        (CLOSED_OUTCOME, 6, 21)
    );
    assert_eq!(
        (
            traffic.bytes_sent.load(Relaxed),
            traffic.bytes_received.load(Relaxed)
        ),
        (6, 21)
    );
}

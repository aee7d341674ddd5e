//! Resets: a TCP reset either way, abort, a dropped pipe, the tunnel lost.
use super::*;

fn rst(s: TcpStream) {
    crate::sockopt::set_abortive_close(&s, true).unwrap();
    drop(s);
}

/// 3a) A client reset reaches the destination as a reset (after the data before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_resets_the_destination() {
    let t = tunnel().await;
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        ..
    } = flow(&t, None, None).await;
    app.write_all(b"partial").await.unwrap();
    let mut b = [0u8; 7];
    timeout(T, dest.read_exact(&mut b)).await.unwrap().unwrap();
    rst(app);
    expect_reset(&mut dest).await;
    assert_eq!(summary(cap).await.outcome, "tcp reset");
    assert_eq!(
        summary(del).await.outcome,
        "peer reset the stream: 0x1 (tcp reset)"
    );
}

/// 3b) The mirror, with the client only waiting (not reading nor writing) when it happens,
/// and a reset on a half-closed connection: the client has sent its FIN already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_reset_resets_the_client() {
    let t = tunnel().await;
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        ..
    } = flow(&t, None, None).await;
    app.write_all(b"req").await.unwrap();
    app.shutdown().await.unwrap();
    let (got, r) = read_all(&mut dest).await;
    r.unwrap();
    assert_eq!(got, b"req");
    dest.write_all(b"partial answer").await.unwrap();
    let mut b = [0u8; 14];
    timeout(T, app.read_exact(&mut b)).await.unwrap().unwrap();
    rst(dest);
    expect_reset(&mut app).await;
    assert_eq!(summary(del).await.outcome, "tcp reset");
    assert_eq!(
        summary(cap).await.outcome,
        "peer reset the stream: 0x1 (tcp reset)"
    );
}

/// 3c) A client reset after its FIN, while the pipe does not read the socket any more,
/// is still noticed (SO_ERROR watch) and reaches the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_after_its_fin_resets_the_destination() {
    let t = tunnel().await;
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        ..
    } = flow(&t, None, None).await;
    app.write_all(b"req").await.unwrap();
    app.shutdown().await.unwrap();
    let (got, r) = read_all(&mut dest).await;
    r.unwrap();
    assert_eq!(got, b"req");
    rst(app);
    assert_eq!(summary(cap).await.outcome, "tcp reset");
    // The delivery side had read its stream to the end: it learns from STOP_SENDING.
    assert_eq!(
        summary(del).await.outcome,
        "peer stopped the stream: 0x1 (tcp reset)"
    );
    // The destination had the FIN already (CLOSE_WAIT), so its reads keep saying EOF; its
    // next write finds the reset (Linux reports a reset in CLOSE_WAIT as EPIPE).
    let e = timeout(T, dest.write_all(b"answer"))
        .await
        .unwrap()
        .expect_err("the destination's connection should be reset");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ),
        "{e}"
    );
}

/// 4) abort() resets both TCP ends; the summary carries its reason; an abort asked for
/// before the pipe runs ends it as soon as it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_resets_both_ends() {
    let t = tunnel().await;
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        cap_ctl,
        ..
    } = flow(&t, None, None).await;
    app.write_all(b"hello").await.unwrap();
    let mut b = [0u8; 5];
    timeout(T, dest.read_exact(&mut b)).await.unwrap().unwrap();
    cap_ctl.abort(app_error::SHUTDOWN, "draining");
    expect_reset(&mut app).await;
    expect_reset(&mut dest).await;
    let c = summary(cap).await;
    assert_eq!((c.outcome.as_str(), c.bytes_to_peer), ("draining", 5));
    assert_eq!(
        summary(del).await.outcome,
        "peer reset the stream: 0x5 (shutdown)"
    );

    // From the delivery side this time, and before anything moved.
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        del_ctl,
        ..
    } = flow(&t, None, None).await;
    del_ctl.abort(app_error::DENIED, "denied by policy (r1)");
    expect_reset(&mut app).await;
    expect_reset(&mut dest).await;
    assert_eq!(summary(del).await.outcome, "denied by policy (r1)");
    assert_eq!(
        summary(cap).await.outcome,
        "peer reset the stream: 0x3 (denied)"
    );

    // Aborted before run_pipe was called.
    let (mut app, tcp) = tcp_pair().await;
    let (send, recv) = t.client.open_bi().await.unwrap();
    let ctl = FlowCtl::new();
    ctl.abort(app_error::SHUTDOWN, "early");
    let s = timeout(
        T,
        run_pipe(
            tcp,
            send,
            recv,
            Bytes::from_static(HEADER),
            Bytes::new(),
            t.out.clone(),
            None,
            ctl,
        ),
    )
    .await
    .unwrap();
    assert_eq!(s.outcome, "early");
    expect_reset(&mut app).await;
}

/// The daemon dying mid-flow (here: the pipe's future dropped) resets the application's
/// connection instead of FINning it, and the stream is reset, not finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_pipe_resets_not_fins() {
    let t = tunnel().await;
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        ..
    } = flow(&t, None, None).await;
    app.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    timeout(T, dest.read_exact(&mut b)).await.unwrap().unwrap();
    cap.abort();
    expect_reset(&mut app).await;
    expect_reset(&mut dest).await;
    assert_eq!(
        summary(del).await.outcome,
        "peer reset the stream: 0x5 (shutdown)"
    );
}

/// Losing the QUIC connection resets both applications' connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_loss_resets_both_ends() {
    let t = tunnel().await;
    let Flow {
        mut app,
        mut dest,
        cap,
        del,
        ..
    } = flow(&t, None, None).await;
    t.client.close(app_error::SHUTDOWN.into(), b"bye");
    expect_reset(&mut app).await;
    expect_reset(&mut dest).await;
    assert!(summary(cap).await.outcome.starts_with("tunnel lost: "));
    assert!(summary(del).await.outcome.starts_with("tunnel lost: "));
}

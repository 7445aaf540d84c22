//! The listening socket: who may connect, how many at once, TLS settings, and a clean stop
//! (sessions are told 421 and nothing half-received is kept).

use super::session::Session;
use super::{Intake, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How long sessions may take to finish after the stop was asked for: a message being kept
/// is kept and answered; every other session is told 421 at once.
const DRAIN: Duration = Duration::from_secs(10);

/// Reads the server's certificate chain and key, and the CA client certificates must be
/// signed by, into a rustls configuration. Errors name the file and what is wrong.
pub fn tls_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&tls.certificate)?)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!(
                    "{}: not a PEM certificate chain: {e}",
                    tls.certificate.display()
                )
            })?;
    if chain.is_empty() {
        return Err(format!(
            "{} holds no certificate",
            tls.certificate.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key)?)
        .map_err(|e| format!("{}: not a PEM private key: {e}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
                let cert =
                    cert.map_err(|e| format!("{}: not a PEM certificate: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "{} and {}: {e}",
            tls.certificate.display(),
            tls.key.display()
        )
    })?;
    Ok(Arc::new(config))
}

/// Tells a client it is not served and closes, reading what it sent meanwhile first, so
/// that the close does not reset the connection before the client has read why.
async fn turn_away(mut stream: tokio::net::TcpStream, refusal: String) {
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(refusal.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Serves connections until `shutdown` turns true, then lets sessions finish (up to
/// [`DRAIN`]) and returns.
pub async fn serve(
    intake: Arc<Intake>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(intake.settings.max_connections));
    let mut sessions = JoinSet::new();
    tracing::info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls = intake.settings.tls.is_some(),
        require_tls = intake.settings.require_tls,
        auth = intake.settings.auth.is_some(),
        "SMTP intake listening"
    );
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "the intake could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if !intake
            .settings
            .networks
            .iter()
            .any(|n| n.contains(peer.ip()))
        {
            tracing::warn!(peer = %peer.ip(), "refused a client outside intake.allow");
            let refusal = format!("554 5.7.1 {} is not allowed to send here\r\n", peer.ip());
            tokio::spawn(turn_away(stream, refusal));
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("the intake is at max_connections; told a client to come back");
            let refusal = "421 4.3.2 too many connections; please try again later\r\n";
            tokio::spawn(turn_away(stream, refusal.to_string()));
            continue;
        };
        let (intake, stop) = (intake.clone(), shutdown.clone());
        sessions.spawn(async move {
            let _slot = slot;
            let _ = Session::new(intake, Box::new(stream), stop).run().await;
        });
    }
    tracing::info!(
        sessions = sessions.len(),
        "SMTP intake closing; open sessions are told 421"
    );
    let drained = tokio::time::timeout(DRAIN, async {
        while sessions.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        sessions.abort_all();
    }
}

//! The archive against both backends: a local directory, and a real S3 server
//! (`s3s-fs`, installed by scripts/test.sh with `cargo install s3s-fs`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use streamcdn_archive::{Archive, StoreSettings, UploadOptions, COMPLETE_MARKER};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamcdn-archive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct S3Server {
    child: Option<Child>,
    port: u16,
    root: PathBuf,
}

impl S3Server {
    fn start(name: &str) -> S3Server {
        let root = temp_dir(&format!("{name}-s3"));
        std::fs::create_dir_all(root.join("recordings")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = S3Server {
            child: None,
            port,
            root,
        };
        server.restart();
        server
    }

    fn restart(&mut self) {
        let exe = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("s3s-fs"));
        let child = Command::new(exe)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", "streamcdn", "--secret-key", "streamcdn-secret"])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs is required: `cargo install s3s-fs --version 0.14.1 --features binary` (scripts/test.sh does this)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn settings(&self) -> StoreSettings {
        StoreSettings::S3 {
            bucket: "recordings".into(),
            region: "us-east-1".into(),
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            path_style: true,
            access_key_id: Some("streamcdn".into()),
            secret_access_key: Some("streamcdn-secret".into()),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn local_files(name: &str) -> (PathBuf, Vec<(String, PathBuf)>) {
    let dir = temp_dir(name);
    let files = (0..12)
        .map(|i| {
            let name = format!("{i:06}.m4s");
            let path = dir.join(&name);
            let body: Vec<u8> = (0..(50_000 + i * 1000))
                .map(|b| (b * 7 + i) as u8)
                .collect();
            std::fs::write(&path, body).unwrap();
            (name, path)
        })
        .collect();
    (dir, files)
}

async fn uploads_verify_resume_and_complete(archive: Archive) {
    let (_dir, files) = local_files("up");
    let prefix = "p/s/20261121T000000Z-0001";
    let options = UploadOptions {
        concurrency: 4,
        ..UploadOptions::default()
    };
    assert!(!archive.is_complete(prefix).await.unwrap());
    let first = archive
        .upload_files(prefix, &files, &options)
        .await
        .unwrap();
    assert_eq!(first.len(), 12);
    assert!(first.iter().all(|o| !o.reused));
    for (name, path) in &files {
        let stored = archive
            .get(&format!("{prefix}/{name}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, Bytes::from(std::fs::read(path).unwrap()), "{name}");
    }
    // A resumed upload sends nothing that is already stored intact...
    let again = archive
        .upload_files(prefix, &files, &options)
        .await
        .unwrap();
    assert!(again.iter().all(|o| o.reused));
    assert_eq!(
        first.iter().map(|o| &o.sha256).collect::<Vec<_>>(),
        again.iter().map(|o| &o.sha256).collect::<Vec<_>>()
    );
    // ...but replaces an object that is not (a torn or foreign write).
    archive
        .put_verified(prefix, "000003.m4s", Bytes::from_static(b"torn"), &options)
        .await
        .unwrap();
    let repaired = archive
        .upload_files(prefix, &files, &options)
        .await
        .unwrap();
    let redone: Vec<&str> = repaired
        .iter()
        .filter(|o| !o.reused)
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(redone, ["000003.m4s"]);

    assert!(!archive.is_complete(prefix).await.unwrap());
    archive
        .complete(prefix, Bytes::from_static(b"{}"), &options)
        .await
        .unwrap();
    assert!(archive.is_complete(prefix).await.unwrap());
    let listed = archive.list(prefix).await.unwrap();
    assert_eq!(
        listed.len(),
        13,
        "12 segments and the marker, no second copies"
    );
    assert!(listed.iter().any(|(n, _)| n == COMPLETE_MARKER));
    assert!(archive.get("p/s/none/000000.m4s").await.unwrap().is_none());
}

#[tokio::test]
async fn local_directory() {
    let archive = Archive::open(&StoreSettings::Local {
        dir: temp_dir("local-store"),
    })
    .unwrap();
    uploads_verify_resume_and_complete(archive).await;
}

#[tokio::test]
async fn s3_server() {
    let server = S3Server::start("s3");
    let archive = Archive::open(&server.settings()).unwrap();
    uploads_verify_resume_and_complete(archive).await;
}

#[tokio::test]
async fn s3_down_fails_the_upload_and_it_completes_once_back() {
    let mut server = S3Server::start("s3-down");
    let archive = Archive::open(&server.settings()).unwrap();
    let (_dir, files) = local_files("down");
    let options = UploadOptions {
        attempts: 2,
        ..UploadOptions::default()
    };
    server.stop();
    assert!(archive
        .upload_files("p/s/r", &files, &options)
        .await
        .is_err());
    server.restart();
    let stored = archive
        .upload_files("p/s/r", &files, &options)
        .await
        .unwrap();
    assert_eq!(stored.len(), 12);
}

#[tokio::test]
async fn the_rate_cap_holds() {
    let archive = Archive::open(&StoreSettings::Local {
        dir: temp_dir("rate-store"),
    })
    .unwrap();
    let (_dir, files) = local_files("rate");
    let total: u64 = files
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();
    let options = UploadOptions {
        max_bytes_per_sec: Some(total * 2),
        ..UploadOptions::default()
    };
    let started = std::time::Instant::now();
    archive
        .upload_files("p/s/r", &files, &options)
        .await
        .unwrap();
    // At twice the total per second, the last object may start no earlier than ~0.45 s.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

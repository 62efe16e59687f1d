//! The web inspector on the metrics address: its HTTP endpoints (authentication, pages with
//! decoded objects, escaping, the live feed), and the pages in a real headless Chromium.

#[path = "../support/mod.rs"]
mod support;

mod browser;
mod cdp;
mod endpoints;
mod http;

use odb::server::{RunningServer, Server};

#[odb::schema(name = "inspector_test")]
pub mod inspected {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Item {
        #[index]
        pub name: String,
        pub count: u64,
        pub parent: Option<odb::Ref<Item>>,
    }
}

/// A server with a TCP listener and the metrics address, on free loopback ports.
async fn start() -> anyhow::Result<RunningServer> {
    Ok(Server::in_memory()
        .listen("127.0.0.1:0".parse()?)
        .metrics("127.0.0.1:0".parse()?)
        .token(support::TOKEN)
        .start()
        .await?)
}

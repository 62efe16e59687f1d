//! The inspector's HTTP endpoints, spoken to directly.

use crate::http::{fetch, open, read_until, Request};
use crate::inspected::Item;
use crate::start;
use crate::support::{bounded, client, TOKEN};
use odb::server::RunningServer;
use std::net::SocketAddr;

fn addr(server: &RunningServer) -> anyhow::Result<SocketAddr> {
    server
        .metrics_addr()
        .ok_or_else(|| anyhow::anyhow!("no metrics address"))
}

#[tokio::test]
async fn pages_need_the_service_token() -> anyhow::Result<()> {
    bounded(async {
        let server = start().await?;
        let addr = addr(&server)?;

        for path in ["/", "/connections", "/types/core.Connection", "/objects/1"] {
            let anonymous = fetch(addr, Request::get(path)).await?;
            assert_eq!(anonymous.status, 401, "{path} without a token");
            assert!(
                anonymous.body.contains("Service token"),
                "{path}: the sign-in form"
            );
            let wrong = fetch(addr, Request::get(path).bearer("not-the-token")).await?;
            assert_eq!(wrong.status, 401, "{path} with a wrong token");
        }
        assert_eq!(fetch(addr, Request::get("/events")).await?.status, 401);
        let page = fetch(addr, Request::get("/").bearer(TOKEN)).await?;
        assert_eq!(page.status, 200, "{}", page.body);
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{csp}");

        // What does not need the token: the metrics (as before), the form and the assets.
        assert_eq!(fetch(addr, Request::get("/metrics")).await?.status, 200);
        assert_eq!(fetch(addr, Request::get("/login")).await?.status, 200);
        let script = fetch(addr, Request::get("/assets/inspector.js")).await?;
        assert_eq!(script.status, 200);
        assert!(script.body.contains("EventSource"));
        assert_eq!(
            fetch(addr, Request::get("/assets/inspector.css"))
                .await?
                .status,
            200
        );
        // Read-only: no other method is served.
        let put = Request {
            method: "PUT",
            ..Request::get("/")
        };
        assert_eq!(fetch(addr, put.bearer(TOKEN)).await?.status, 405);

        // Signing in with a wrong token fails; with the token it gives a session cookie that
        // scripts cannot read and other sites cannot send.
        let mut forged = Request::post_form("/login", "token=guess");
        forged
            .headers
            .push("Origin: http://elsewhere.example".into());
        assert_eq!(fetch(addr, forged).await?.status, 403);
        let mut forged = Request::post_form("/login", "token=guess");
        forged.headers.push("Sec-Fetch-Site: cross-site".into());
        assert_eq!(fetch(addr, forged).await?.status, 403);
        let refused = fetch(addr, Request::post_form("/login", "token=guess")).await?;
        assert_eq!(refused.status, 401);
        assert!(refused.header("set-cookie").is_none());
        let form = format!("token={TOKEN}");
        let signed_in = fetch(addr, Request::post_form("/login", &form)).await?;
        assert_eq!(signed_in.status, 303, "{}", signed_in.body);
        assert_eq!(signed_in.header("location"), Some("/"));
        let set_cookie = signed_in.header("set-cookie").unwrap_or_default();
        assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
        assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
        assert!(
            !set_cookie.contains(TOKEN),
            "the cookie holds a session id, not the token"
        );
        let cookie = set_cookie.split(';').next().unwrap_or_default().to_string();
        let page = fetch(addr, Request::get("/").cookie(&cookie)).await?;
        assert_eq!(page.status, 200);
        let forged = fetch(addr, Request::get("/").cookie("odb_inspector=00ff")).await?;
        assert_eq!(forged.status, 401);

        // Signing out ends the session.
        let out = fetch(
            addr,
            Request {
                method: "POST",
                ..Request::get("/logout")
            }
            .cookie(&cookie),
        )
        .await?;
        assert_eq!(out.status, 303);
        let page = fetch(addr, Request::get("/").cookie(&cookie)).await?;
        assert_eq!(page.status, 401);
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn wrong_tokens_are_answered_later_and_later() -> anyhow::Result<()> {
    bounded(async {
        let server = start().await?;
        let addr = addr(&server)?;
        // The first failures from an address cost nothing; then each answer waits, the wait
        // doubling from a quarter of a second (the throttle of hellos, shared).
        for _ in 0..5 {
            let wrong = fetch(addr, Request::get("/").bearer("guess")).await?;
            assert_eq!(wrong.status, 401);
        }
        let asked = std::time::Instant::now();
        let wrong = fetch(addr, Request::get("/").bearer("guess")).await?;
        assert_eq!(wrong.status, 401);
        let waited = asked.elapsed();
        assert!(
            waited >= std::time::Duration::from_millis(250),
            "answered after {waited:?}"
        );
        let form = fetch(addr, Request::post_form("/login", "token=guess")).await?;
        assert_eq!(form.status, 401);
        // The token still works from the same address.
        let page = fetch(addr, Request::get("/").bearer(TOKEN)).await?;
        assert_eq!(page.status, 200);
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pages_show_decoded_objects_and_escape_them() -> anyhow::Result<()> {
    bounded(async {
        let server = start().await?;
        let addr = addr(&server)?;
        let db = client(&server).await?;
        db.subscribe_type::<Item>().await?;
        let hostile = "<script>alert('x')</script>";
        let (first, second) = db
            .transaction(|tx| {
                let first = Item::create(
                    tx,
                    Item {
                        name: "plain-item".into(),
                        count: 41,
                        parent: None,
                    },
                )?;
                let second = Item::create(
                    tx,
                    Item {
                        name: hostile.into(),
                        count: 42,
                        parent: Some(first),
                    },
                )?;
                for i in 0..3 {
                    Item::create(
                        tx,
                        Item {
                            name: format!("filler-{i}"),
                            count: i,
                            parent: None,
                        },
                    )?;
                }
                Ok::<_, odb::Error>((first, second))
            })
            .await?;

        let overview = fetch(addr, Request::get("/").bearer(TOKEN)).await?;
        assert_eq!(overview.status, 200);
        assert!(
            overview.body.contains("inspector_test.Item"),
            "{}",
            overview.body
        );
        assert!(
            overview.body.contains("<td class=\"number\">5</td>"),
            "five items counted: {}",
            overview.body
        );

        let page = fetch(
            addr,
            Request::get("/types/inspector_test.Item").bearer(TOKEN),
        )
        .await?;
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains("&quot;plain-item&quot;"),
            "{}",
            page.body
        );
        assert!(page.body.contains(">41<"));
        assert!(
            !page.body.contains("<script>alert"),
            "unescaped: {}",
            page.body
        );
        assert!(page
            .body
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));

        // Paged: two at a time, with a link to the next page.
        let paged = fetch(
            addr,
            Request::get("/types/inspector_test.Item?limit=2").bearer(TOKEN),
        )
        .await?;
        assert_eq!(paged.body.matches("<tr><td>").count(), 2, "{}", paged.body);
        assert!(paged.body.contains("Next page"));

        let shown = format!("/objects/{}", second.id().0);
        let object = fetch(addr, Request::get(&shown).bearer(TOKEN)).await?;
        assert_eq!(object.status, 200);
        assert!(object.body.contains(">count<") && object.body.contains(">42<"));
        assert!(!object.body.contains("<script>alert"));
        // The reference links to the object it names; the index value is shown decoded.
        let link = format!("href=\"/objects/{}\"", first.id().0);
        assert!(object.body.contains(&link), "{}", object.body);
        assert!(object.body.contains("Index values"));
        assert_eq!(
            object.body.matches("&lt;script&gt;").count(),
            2,
            "the name, as a field and as an index value: {}",
            object.body
        );

        let missing = fetch(addr, Request::get("/objects/999999").bearer(TOKEN)).await?;
        assert_eq!(missing.status, 404);
        let bad = fetch(addr, Request::get("/objects/x").bearer(TOKEN)).await?;
        assert_eq!(bad.status, 400);
        let unknown = fetch(addr, Request::get("/types/no.Such").bearer(TOKEN)).await?;
        assert_eq!(unknown.status, 404);

        let connections = fetch(addr, Request::get("/connections").bearer(TOKEN)).await?;
        assert_eq!(connections.status, 200);
        assert!(
            connections.body.contains("1 connections."),
            "{}",
            connections.body
        );
        assert!(
            connections
                .body
                .contains("all of <a href=\"/types/inspector_test.Item\">"),
            "{}",
            connections.body
        );
        assert!(
            connections.body.contains("concurrency-test"),
            "the client's name"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_feed_streams_each_commit_with_what_changed() -> anyhow::Result<()> {
    bounded(async {
        let server = start().await?;
        let addr = addr(&server)?;
        let db = client(&server).await?;
        let mut feed = open(addr, Request::get("/events").bearer(TOKEN)).await?;
        let mut received = String::new();
        read_until(&mut feed, &mut received, "the first figures", |r| {
            r.contains("event: stats")
        })
        .await?;
        assert!(received.contains("text/event-stream"), "{received}");

        let item = db
            .transaction(|tx| {
                let name = "fed".to_string();
                Item::create(
                    tx,
                    Item {
                        name,
                        count: 1,
                        parent: None,
                    },
                )
            })
            .await?;
        let id = item.id().0;
        let created = format!("create #{id} inspector_test.Item");
        read_until(&mut feed, &mut received, "the creation", |r| {
            r.contains(&created)
        })
        .await?;
        let line = received
            .lines()
            .find(|l| l.contains(&created))
            .unwrap_or_default();
        assert!(
            line.contains("name=\"fed\"") && line.contains("count=1"),
            "{line}"
        );

        db.transaction(|tx| item.set_count(tx, 7)).await?;
        let updated = format!("update #{id} inspector_test.Item count=7");
        read_until(&mut feed, &mut received, "the update", |r| {
            r.contains(&updated)
        })
        .await?;
        db.transaction(|tx| item.delete(tx)).await?;
        let deleted = format!("delete #{id} inspector_test.Item");
        read_until(&mut feed, &mut received, "the deletion", |r| {
            r.contains(&deleted)
        })
        .await?;
        server.shutdown().await;
        Ok(())
    })
    .await
}

//! The inspector's pages, each rendered from one or two answers of the sequencer.

use super::html::{escape, page, Html, CELL_CHARS};
use super::{html, plain};
use crate::http::{ask, HttpResponse, HttpState};
use crate::sequencer::inspect::{Answer, ConnectionInfo, Query, MAX_PAGE};
use hyper::StatusCode;
use odb_wire::catalog::{Catalog, Decoded};
use odb_wire::{ObjectData, ObjectId, SchemaInfo};

/// Objects on a type's page unless the address asks for another number.
const PAGE: usize = 50;

/// The sign-in form, with an error message after a wrong token.
pub(crate) fn sign_in(error: Option<&str>) -> String {
    let mut body = Html::default();
    if let Some(error) = error {
        body.raw("<p class=\"error\" id=\"sign-in-error\">")
            .text(error)
            .raw("</p>");
    }
    body.raw("<form class=\"sign-in\" method=\"post\" action=\"/login\">")
        .raw("<label for=\"token\">Service token</label>")
        .raw("<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required>")
        .raw("<button type=\"submit\">Sign in</button></form>")
        .raw("<p class=\"note\">The inspector is read-only. Signing in sets a session cookie ")
        .raw("for this address; the token itself is not stored.</p>");
    page("Sign in", false, &body.finish())
}

fn unavailable() -> HttpResponse {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server did not answer in time; retry\n",
    )
}

async fn schemas(state: &HttpState) -> Option<Vec<SchemaInfo>> {
    match ask(state, Query::Schemas).await {
        Some(Answer::Schemas(schemas)) => Some(schemas),
        _ => None,
    }
}

/// `/`: the figures, the schemas and the live feed.
pub(crate) async fn overview(state: &HttpState) -> HttpResponse {
    let (Some(Answer::Stats(stats)), Some(schemas)) =
        (ask(state, Query::Stats).await, schemas(state).await)
    else {
        return unavailable();
    };
    let mut body = Html::default();
    body.raw("<section class=\"glance\"><h2>At a glance</h2><dl>");
    let figures = [
        ("commits per second", "m-rate", "…".to_string()),
        ("tid", "m-tid", stats.tid.0.to_string()),
        (
            "connections",
            "m-connections",
            stats.connections.to_string(),
        ),
        ("objects", "m-objects", stats.objects.to_string()),
        (
            "outbound bytes",
            "m-outbound",
            stats.outbound_bytes.to_string(),
        ),
        ("store bytes", "m-store", stats.store_bytes.to_string()),
        (
            "index values",
            "m-index-values",
            stats.index_values.to_string(),
        ),
        (
            "subscriptions (types, index values, objects)",
            "m-subscriptions",
            format!(
                "{}, {}, {}",
                stats.subscriptions.0, stats.subscriptions.1, stats.subscriptions.2
            ),
        ),
    ];
    for (name, id, value) in figures {
        body.raw("<div><dt>")
            .text(name)
            .raw("</dt><dd id=\"")
            .raw(id)
            .raw("\">")
            .text(&value)
            .raw("</dd></div>");
    }
    body.raw("</dl><p class=\"note\">Store bytes, index values and subscriptions are as of ")
        .raw("loading this page; the other figures follow the server live.</p></section>");

    body.raw("<section><h2>Schemas</h2><table id=\"types\"><thead><tr><th>Type</th>")
        .raw("<th>Objects</th><th>Fields</th><th>Indices</th></tr></thead><tbody>");
    for schema in &schemas {
        for ty in &schema.types {
            let name = format!("{}.{}", schema.name, ty.name);
            let fields: Vec<String> = ty
                .fields
                .iter()
                .map(|f| match &f.desc {
                    Some(desc) => format!("{}: {desc}", f.name),
                    None => f.name.clone(),
                })
                .collect();
            let indices: Vec<String> = ty
                .indices
                .iter()
                .map(|i| format!("{} ({})", i.name, i.fields.join(", ")))
                .collect();
            body.raw("<tr><td>")
                .link(&format!("/types/{name}"), &name)
                .raw("</td><td class=\"number\">")
                .text(&ty.count.to_string())
                .raw("</td><td>")
                .text(&fields.join("; "))
                .raw("</td><td>")
                .text(&indices.join("; "))
                .raw("</td></tr>");
        }
    }
    body.raw("</tbody></table></section>");

    body.raw("<section><h2>Live commits</h2>")
        .raw("<p class=\"note\">Newest first: one line per commit, with what it changed. ")
        .raw("<span id=\"feed-state\">Connecting…</span></p><ol id=\"feed\"></ol></section>");
    html(StatusCode::OK, page("Overview", true, &body.finish()))
}

/// `/types/SCHEMA.Type?after=ID&limit=N`: a page of a type's objects.
pub(crate) async fn objects(state: &HttpState, name: &str, query: &str) -> HttpResponse {
    let Some(schemas) = schemas(state).await else {
        return unavailable();
    };
    let catalog = Catalog::new(schemas);
    let Some(ty) = catalog.type_named(name) else {
        let body = format!(
            "<p class=\"error\">There is no type {}. The <a href=\"/\">overview</a> lists them.</p>",
            escape(&format!("{name:?}"))
        );
        return html(StatusCode::NOT_FOUND, page("Unknown type", true, &body));
    };
    let param = |key: &str| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == key).then(|| v.parse::<u64>().ok()).flatten()
        })
    };
    let after = param("after").unwrap_or(0);
    let limit = param("limit")
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(PAGE)
        .clamp(1, MAX_PAGE);
    let asked = Query::Objects {
        ty: ty.type_id,
        after: ObjectId(after),
        limit,
    };
    let Some(Answer::Objects { objects, more }) = ask(state, asked).await else {
        return unavailable();
    };
    let mut body = Html::default();
    body.raw("<p>")
        .text(&format!("{} live objects", ty.count))
        .raw(if after > 0 { " · after id " } else { "" })
        .text(&if after > 0 {
            after.to_string()
        } else {
            String::new()
        })
        .raw("</p><table id=\"objects\"><thead><tr><th>Id</th>");
    for field in &ty.fields {
        body.raw("<th>").text(&field.name).raw("</th>");
    }
    body.raw("</tr></thead><tbody>");
    for object in &objects {
        let view = catalog.view(object);
        body.raw("<tr><td>")
            .link(
                &format!("/objects/{}", object.id.0),
                &format!("#{}", object.id.0),
            )
            .raw("</td>");
        for field in &ty.fields {
            body.raw("<td>");
            if let Some((_, value)) = view.fields.iter().find(|(n, _)| *n == field.name) {
                body.value(value, CELL_CHARS);
            }
            body.raw("</td>");
        }
        body.raw("</tr>");
    }
    body.raw("</tbody></table><p class=\"pages\">");
    if after > 0 {
        body.link(&format!("/types/{name}?limit={limit}"), "First page");
    }
    if let (true, Some(last)) = (more, objects.last()) {
        body.link(
            &format!("/types/{name}?after={}&limit={limit}", last.id.0),
            "Next page",
        );
    }
    body.raw("</p>");
    html(StatusCode::OK, page(name, true, &body.finish()))
}

/// `/objects/ID`: one object.
pub(crate) async fn object(state: &HttpState, id: &str) -> HttpResponse {
    let Ok(id) = id.parse::<u64>() else {
        let body = "<p class=\"error\">An object id is a number.</p>";
        return html(StatusCode::BAD_REQUEST, page("Bad object id", true, body));
    };
    let (Some(schemas), Some(Answer::Object(object))) = (
        schemas(state).await,
        ask(state, Query::Object(ObjectId(id))).await,
    ) else {
        return unavailable();
    };
    let title = format!("Object #{id}");
    let Some(object) = object else {
        let body = "<p class=\"error\">No live object has this id.</p>";
        return html(StatusCode::NOT_FOUND, page(&title, true, body));
    };
    let catalog = Catalog::new(schemas);
    let view = catalog.view(&object);
    let mut body = Html::default();
    body.raw("<p>Type ");
    if view.type_name == "?" {
        body.text("unknown");
    } else {
        body.link(&format!("/types/{}", view.type_name), &view.type_name);
    }
    body.raw("</p><h2>Fields</h2>");
    pairs_table(&mut body, "fields", &view.fields);
    body.raw("<h2>Index values</h2>");
    pairs_table(&mut body, "indices", &view.indices);
    html(StatusCode::OK, page(&title, true, &body.finish()))
}

fn pairs_table(body: &mut Html, id: &str, pairs: &[(String, Decoded)]) {
    if pairs.is_empty() {
        body.raw("<p class=\"note\">None.</p>");
        return;
    }
    body.raw("<table id=\"")
        .raw(id)
        .raw("\"><thead><tr><th>Name</th><th>Value</th></tr></thead><tbody>");
    for (name, value) in pairs {
        body.raw("<tr><td>")
            .text(name)
            .raw("</td><td>")
            .value(value, usize::MAX)
            .raw("</td></tr>");
    }
    body.raw("</tbody></table>");
}

/// `/connections`: the connections and their subscriptions.
pub(crate) async fn connections(state: &HttpState) -> HttpResponse {
    let (Some(schemas), Some(Answer::Connections { list, total })) =
        (schemas(state).await, ask(state, Query::Connections).await)
    else {
        return unavailable();
    };
    let catalog = Catalog::new(schemas);
    let mut body = Html::default();
    body.raw("<p>")
        .text(&if list.len() < total {
            format!("{total} connections; the first {} are shown.", list.len())
        } else {
            format!("{total} connections.")
        })
        .raw("</p><table id=\"connections\"><thead><tr><th>Id</th><th>Connection</th>")
        .raw("<th>Outbound bytes</th><th>Subscriptions (types, index values, objects)</th>")
        .raw("<th>Subscribed to</th></tr></thead><tbody>");
    for conn in &list {
        connection_row(&mut body, &catalog, conn);
    }
    body.raw("</tbody></table>");
    html(StatusCode::OK, page("Connections", true, &body.finish()))
}

fn connection_row(body: &mut Html, catalog: &Catalog, conn: &ConnectionInfo) {
    body.raw("<tr><td>")
        .link(
            &format!("/objects/{}", conn.id.0),
            &format!("#{}", conn.id.0),
        )
        .raw("</td><td>");
    if let Some(object) = &conn.object {
        describe_fields(body, catalog, object);
    }
    let held = conn.held;
    body.raw("</td><td class=\"number\">")
        .text(&conn.outbound_bytes.to_string())
        .raw("</td><td>")
        .text(&format!(
            "{}, {}, {}",
            held.types, held.index_values, held.objects
        ))
        .raw("</td><td><ul class=\"targets\">");
    for (index, value) in &conn.indices {
        body.raw("<li>");
        match catalog.all_index_type(*index) {
            Some(ty) => {
                let name = catalog.type_name(ty).unwrap_or("?");
                body.text("all of ").link(&format!("/types/{name}"), name);
            }
            None => match catalog.index(*index, value) {
                Some((name, decoded)) => {
                    body.text(&format!("index {name} = "))
                        .value(&decoded, CELL_CHARS);
                }
                None => {
                    body.text(&format!("index #{}", index.0));
                }
            },
        }
        body.raw("</li>");
    }
    for object in &conn.objects {
        body.raw("<li>object ")
            .link(&format!("/objects/{}", object.0), &format!("#{}", object.0))
            .raw("</li>");
    }
    let listed = conn.indices.len() + conn.objects.len();
    let held_total = held.types + held.index_values + held.objects;
    if held_total > listed {
        body.raw("<li>")
            .text(&format!("and {} more", held_total - listed))
            .raw("</li>");
    }
    body.raw("</ul></td></tr>");
}

/// An object's fields as `name = value` words.
fn describe_fields(body: &mut Html, catalog: &Catalog, object: &ObjectData) {
    let view = catalog.view(object);
    for (i, (name, value)) in view.fields.iter().enumerate() {
        if i > 0 {
            body.raw(" · ");
        }
        body.text(&format!("{name} = ")).value(value, CELL_CHARS);
    }
}

//! The commands of `odb`, each writing its output through an [`Output`].

use crate::error::CliError;
use crate::render::{object_json, object_line, pairs_json, pairs_text};
use crate::session::Session;
use bytes::Bytes;
use odb_wire::catalog::{Catalog, ObjectView};
use odb_wire::{CommitData, ObjectId, SubscriptionTarget};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

/// Where results go: one line at a time, as text or as JSON.
pub struct Output<W: Write> {
    /// The writer.
    pub out: W,
    /// JSON (one document, or one per line for `tail`) instead of text.
    pub json: bool,
}

impl<W: Write> Output<W> {
    fn line(&mut self, line: impl AsRef<str>) -> Result<(), CliError> {
        writeln!(self.out, "{}", line.as_ref())
            .and_then(|()| self.out.flush())
            .map_err(|e| CliError::Connect(format!("cannot write the output: {e}")))
    }

    fn json(&mut self, value: serde_json::Value) -> Result<(), CliError> {
        self.line(value.to_string())
    }
}

/// `odb stats`.
pub async fn stats<W: Write>(session: &mut Session, out: &mut Output<W>) -> Result<(), CliError> {
    let s = session.stats().await?;
    if out.json {
        return out.json(json!({
            "tid": s.tid.0,
            "connections": s.connections,
            "objects": s.objects,
            "index_values": s.index_values,
            "store_bytes": s.store_bytes,
            "conflict_stamps": s.conflict_stamps,
            "outbound_bytes": s.outbound_bytes,
            "subscriptions": {
                "type": s.subscriptions.0,
                "index": s.subscriptions.1,
                "object": s.subscriptions.2,
            },
        }));
    }
    for (name, value) in [
        ("tid", s.tid.0),
        ("connections", s.connections),
        ("objects", s.objects),
        ("index values", s.index_values),
        ("store bytes", s.store_bytes),
        ("conflict stamps", s.conflict_stamps),
        ("outbound bytes", s.outbound_bytes),
        ("type subscriptions", s.subscriptions.0),
        ("index subscriptions", s.subscriptions.1),
        ("object subscriptions", s.subscriptions.2),
    ] {
        out.line(format!("{name:<22}{value}"))?;
    }
    Ok(())
}

/// `odb schemas`.
pub async fn schemas<W: Write>(session: &mut Session, out: &mut Output<W>) -> Result<(), CliError> {
    let schemas = session.schemas().await?;
    if out.json {
        let list: Vec<_> = schemas
            .iter()
            .map(|s| {
                let types: Vec<_> = s
                    .types
                    .iter()
                    .map(|t| {
                        json!({
                            "name": t.name,
                            "count": t.count,
                            "fields": t.fields.iter().map(|f| json!({
                                "name": f.name,
                                "type": f.desc.as_ref().map(|d| d.to_string()),
                            })).collect::<Vec<_>>(),
                            "indices": t.indices.iter().map(|i| json!({
                                "name": i.name,
                                "fields": i.fields,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({ "name": s.name, "types": types })
            })
            .collect();
        return out.json(json!(list));
    }
    for s in &schemas {
        for t in &s.types {
            out.line(format!("{}.{} ({} objects)", s.name, t.name, t.count))?;
            for f in &t.fields {
                let ty = f
                    .desc
                    .as_ref()
                    .map_or_else(|| "(undescribed)".to_string(), |d| d.to_string());
                out.line(format!("    {}: {ty}", f.name))?;
            }
            for i in &t.indices {
                out.line(format!("    index {} ({})", i.name, i.fields.join(", ")))?;
            }
        }
    }
    Ok(())
}

/// The type named `schema.Type`, or an error naming the command that lists them.
fn type_named<'c>(catalog: &'c Catalog, name: &str) -> Result<&'c odb_wire::TypeInfo, CliError> {
    catalog.type_named(name).ok_or_else(|| {
        CliError::NotFound(format!(
            "no type {name:?}; `odb schemas` lists them (names are schema.Type)"
        ))
    })
}

/// `odb count SCHEMA.Type`.
pub async fn count<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    type_name: &str,
) -> Result<(), CliError> {
    let catalog = Catalog::new(session.schemas().await?);
    let n = type_named(&catalog, type_name)?.count;
    if out.json {
        return out.json(json!({ "type": type_name, "count": n }));
    }
    out.line(n.to_string())
}

/// `odb ls SCHEMA.Type [--where INDEX=VALUE] [--limit N]`.
pub async fn ls<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    type_name: &str,
    filter: Option<&str>,
    limit: Option<usize>,
) -> Result<(), CliError> {
    let catalog = Catalog::new(session.schemas().await?);
    let ty = type_named(&catalog, type_name)?;
    let target = match filter {
        None => SubscriptionTarget::Type(ty.type_id),
        Some(filter) => {
            let (index_name, text) = filter.split_once('=').ok_or_else(|| {
                CliError::Usage(format!("--where takes INDEX=VALUE, not {filter:?}"))
            })?;
            let index = ty
                .indices
                .iter()
                .find(|i| i.name == index_name)
                .ok_or_else(|| {
                    let names: Vec<&str> = ty.indices.iter().map(|i| i.name.as_str()).collect();
                    CliError::NotFound(format!(
                        "{type_name} has no index {index_name:?} (its indices: {})",
                        names.join(", ")
                    ))
                })?;
            let [field] = index.fields.as_slice() else {
                return Err(CliError::Usage(format!(
                    "index {index_name} covers several fields; --where supports single-field indices"
                )));
            };
            let desc = catalog.field_desc(ty, field).ok_or_else(|| {
                CliError::Usage(format!(
                    "field {field} has no description, so {text:?} cannot be encoded; \
                     the schema must be declared by a client that sends descriptions"
                ))
            })?;
            let value = odb_wire::describe::encode_text(desc, text)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            SubscriptionTarget::Index {
                index: index.id,
                value: Bytes::from(value),
            }
        }
    };
    let (objects, _) = session.subscribe(vec![target]).await?;
    let views: Vec<ObjectView> = objects
        .iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|o| catalog.view(o))
        .collect();
    if out.json {
        return out.json(json!(views.iter().map(object_json).collect::<Vec<_>>()));
    }
    for view in &views {
        out.line(object_line(view))?;
    }
    Ok(())
}

/// `odb show ID`.
pub async fn show<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    id: u64,
) -> Result<(), CliError> {
    let catalog = Catalog::new(session.schemas().await?);
    let (objects, _) = session
        .subscribe(vec![SubscriptionTarget::Object(ObjectId(id))])
        .await?;
    let object = objects
        .iter()
        .find(|o| o.id.0 == id)
        .ok_or_else(|| CliError::NotFound(format!("no object #{id}")))?;
    let view = catalog.view(object);
    if out.json {
        return out.json(object_json(&view));
    }
    out.line(format!("#{} {}", view.id, view.type_name))?;
    for (name, value) in &view.fields {
        out.line(format!(
            "    {name} = {}",
            crate::render::decoded_text(value)
        ))?;
    }
    for (name, value) in &view.indices {
        out.line(format!(
            "    index {name} = {}",
            crate::render::decoded_text(value)
        ))?;
    }
    Ok(())
}

/// `odb dump SCHEMA`: every object of every type of the schema.
pub async fn dump<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    schema: &str,
) -> Result<(), CliError> {
    let catalog = Catalog::new(session.schemas().await?);
    let info = catalog
        .schemas
        .iter()
        .find(|s| s.name == schema)
        .ok_or_else(|| {
            CliError::NotFound(format!("no schema {schema:?}; `odb schemas` lists them"))
        })?;
    let targets = info
        .types
        .iter()
        .map(|t| SubscriptionTarget::Type(t.type_id))
        .collect();
    let (objects, tid) = session.subscribe(targets).await?;
    let mut by_type: BTreeMap<String, Vec<ObjectView>> = info
        .types
        .iter()
        .map(|t| (format!("{schema}.{}", t.name), Vec::new()))
        .collect();
    for object in &objects {
        let view = catalog.view(object);
        by_type
            .entry(view.type_name.clone())
            .or_default()
            .push(view);
    }
    if out.json {
        let types: serde_json::Map<String, serde_json::Value> = by_type
            .iter()
            .map(|(name, views)| {
                (
                    name.clone(),
                    json!(views.iter().map(object_json).collect::<Vec<_>>()),
                )
            })
            .collect();
        return out.json(json!({ "schema": schema, "tid": tid.0, "types": types }));
    }
    out.line(format!("schema {schema} at tid {}", tid.0))?;
    for views in by_type.values() {
        for view in views {
            out.line(object_line(view))?;
        }
    }
    Ok(())
}

/// `odb tail`: a first line with the tid it follows from (everything committed later is
/// printed), then one line per commit with what changed, until `limit` commits (or forever).
pub async fn tail<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    limit: Option<u64>,
) -> Result<(), CliError> {
    let catalog = Catalog::new(session.schemas().await?);
    let targets = catalog
        .schemas
        .iter()
        .flat_map(|s| s.types.iter().map(|t| SubscriptionTarget::Type(t.type_id)))
        .collect();
    let (objects, tid) = session.subscribe(targets).await?;
    let mut known: HashMap<ObjectId, String> = objects
        .iter()
        .map(|o| (o.id, catalog.view(o).type_name))
        .collect();
    if out.json {
        out.json(json!({ "following_after_tid": tid.0 }))?;
    } else {
        out.line(format!(
            "following commits after tid {} (Ctrl-C stops)",
            tid.0
        ))?;
    }
    let mut seen = 0;
    while limit.is_none_or(|limit| seen < limit) {
        let commit = session.next_commit().await?;
        // Commits pushed while subscribing (this connection's own object) are in the snapshot.
        if commit.tid <= tid {
            continue;
        }
        let changes = describe_commit(&catalog, &mut known, &commit);
        if out.json {
            let list: Vec<_> = changes
                .iter()
                .map(|c| {
                    json!({
                        "op": c.op, "id": c.id, "type": c.type_name,
                        "fields": pairs_json(&c.fields),
                    })
                })
                .collect();
            out.json(json!({ "tid": commit.tid.0, "changes": list }))?;
        } else {
            let parts: Vec<String> = changes
                .iter()
                .map(|c| {
                    format!(
                        "{} #{} {} {}",
                        c.op,
                        c.id,
                        c.type_name,
                        pairs_text(&c.fields)
                    )
                    .trim_end()
                    .to_string()
                })
                .collect();
            out.line(format!("tid {}: {}", commit.tid.0, parts.join("; ")))?;
        }
        seen += 1;
    }
    Ok(())
}

/// One object's change in a commit.
struct Change {
    op: &'static str,
    id: u64,
    type_name: String,
    fields: Vec<(String, odb_wire::catalog::Decoded)>,
}

fn describe_commit(
    catalog: &Catalog,
    known: &mut HashMap<ObjectId, String>,
    commit: &CommitData,
) -> Vec<Change> {
    let mut writes: BTreeMap<ObjectId, Vec<(odb_wire::FieldId, Option<Bytes>)>> = BTreeMap::new();
    for w in &commit.writes {
        writes
            .entry(w.object)
            .or_default()
            .push((w.field, w.value.clone()));
    }
    let mut changes = Vec::new();
    for (id, fields) in writes {
        let created = fields
            .iter()
            .any(|(f, v)| v.is_some() && catalog.is_exists_field(*f))
            && !known.contains_key(&id);
        let type_name = fields
            .iter()
            .find_map(|(f, _)| catalog.field_type(*f))
            .and_then(|t| catalog.type_name(t))
            .unwrap_or("?")
            .to_string();
        known.insert(id, type_name.clone());
        let decoded = fields
            .iter()
            .filter(|(f, _)| !catalog.is_exists_field(*f))
            .map(|(f, v)| match v {
                Some(v) => catalog.field(*f, v),
                None => (
                    catalog.field(*f, &[]).0,
                    odb_wire::catalog::Decoded::Value(odb_wire::describe::Value::Unit),
                ),
            })
            .collect();
        changes.push(Change {
            op: if created { "create" } else { "update" },
            id: id.0,
            type_name,
            fields: decoded,
        });
    }
    for id in &commit.deletes {
        changes.push(Change {
            op: "delete",
            id: id.0,
            type_name: known.remove(id).unwrap_or_else(|| "?".into()),
            fields: Vec::new(),
        });
    }
    changes
}

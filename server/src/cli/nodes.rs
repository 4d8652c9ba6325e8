//! `oxiscale nodes …`: headscale's node verbs, and `approve` for device approval.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::AdminClient;
use super::output::Output;
use super::{confirm, path_segment, views};

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// List nodes.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[arg(short = 'u', long = "user")]
        user: Option<String>,
    },
    /// Register a node waiting for an interactive login (headscale's older form of `auth
    /// register`).
    Register {
        /// User (id or name).
        #[arg(short = 'u', long = "user")]
        user: String,
        /// The registration id from the login URL.
        #[arg(short = 'k', long = "key")]
        key: String,
    },
    /// Expire a node's key now or at a time, or disable its expiry.
    #[command(visible_aliases = ["logout", "exp", "e"])]
    Expire {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
        /// RFC 3339 time (default: now).
        #[arg(short = 'e', long = "expiry")]
        expiry: Option<String>,
        /// Never expire.
        #[arg(short = 'd', long = "disable")]
        disable: bool,
    },
    /// Let a node that waits for approval (`node.approval_required`) into the tailnet.
    Approve {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
    },
    /// Give a node a new MagicDNS name.
    Rename {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
        new_name: String,
    },
    /// Delete a node.
    #[command(visible_alias = "del")]
    Delete {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
    },
    /// Set a node's tags (a tagged node is owned by its tags).
    #[command(visible_aliases = ["tags", "t"])]
    Tag {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
        #[arg(short = 't', long = "tags", value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Show the nodes that advertise, have approved or serve routes.
    #[command(visible_aliases = ["lsr", "routes"])]
    ListRoutes {
        #[arg(short = 'i', long = "identifier")]
        id: Option<u64>,
    },
    /// Set the approved routes of a node (empty removes all).
    ApproveRoutes {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
        #[arg(
            short = 'r',
            long = "routes",
            value_delimiter = ',',
            default_value = ""
        )]
        routes: Vec<String>,
    },
    /// Give nodes addresses for the configured prefixes they lack.
    Backfillips,
    /// Show a node's posture attributes, or set or delete its custom ones (`custom:*`).
    #[command(visible_alias = "attrs", args_conflicts_with_subcommands = true)]
    Attributes {
        #[arg(short = 'i', long = "identifier")]
        id: Option<u64>,
        #[command(subcommand)]
        action: Option<AttributesCommand>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AttributesCommand {
    /// Set a custom attribute: `true`/`false` and numbers are read as such, anything else
    /// as a string (quote it in JSON, e.g. '"42"', to force a string).
    Set {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
        /// `custom:<name>`.
        #[arg(short = 'k', long = "key")]
        key: String,
        #[arg(short = 'v', long = "value")]
        value: String,
        /// RFC 3339 time after which it counts as absent (default: never).
        #[arg(short = 'e', long = "expiry")]
        expiry: Option<String>,
        /// Why (kept in the audit log).
        #[arg(long = "comment")]
        comment: Option<String>,
    },
    /// Delete a custom attribute.
    #[command(visible_alias = "del")]
    Delete {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
        #[arg(short = 'k', long = "key")]
        key: String,
    },
}

/// A value given on the command line: a JSON boolean, number or string if it reads as one,
/// else the text itself.
fn attribute_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        _ => Value::String(text.to_owned()),
    }
}

/// An attribute key in the path, percent-encoded (`:` and all).
fn key_segment(key: &str) -> String {
    form_urlencoded::byte_serialize(key.as_bytes()).collect()
}

fn show_attributes(out: &Output, v: &Value) {
    out.value(v, |v| {
        let expiries = &v["expiries"];
        let mut lines: Vec<String> = v["attributes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, value)| match expiries[k].as_str() {
                Some(at) => format!("{k} = {value} (expires {at})"),
                None => format!("{k} = {value}"),
            })
            .collect();
        if lines.is_empty() {
            lines.push("No attributes".into());
        }
        lines.join("\n")
    });
}

fn given_name(v: &Value) -> &str {
    v["given_name"].as_str().unwrap_or_default()
}

pub async fn run(
    client: &AdminClient,
    out: &Output,
    force: bool,
    command: NodesCommand,
) -> anyhow::Result<()> {
    match command {
        NodesCommand::List { user } => {
            let path = match user {
                Some(u) => format!("/api/v1/node?user={}", path_segment(&u)),
                None => "/api/v1/node".into(),
            };
            let mut shown = views::nodes(client.get(&path).await?, |_| true)?;
            with_approval_state(&mut shown.human);
            out.shown_table(
                &shown,
                &[
                    ("ID", "id"),
                    ("Hostname", "name"),
                    ("Name", "given_name"),
                    ("User", "user.name"),
                    ("Tags", "tags"),
                    ("IP addresses", "ip_addresses"),
                    ("Online", "online"),
                    ("Last seen", "last_seen"),
                    ("Expired", "expired"),
                    ("Approval", "approval"),
                ],
            );
        }
        NodesCommand::Register { user, key } => {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("user", &user)
                .append_pair("key", &key)
                .finish();
            let v = client
                .post(&format!("/api/v1/node/register?{query}"), json!({}))
                .await?;
            let shown = views::node(v)?;
            out.shown(&shown, |v| format!("Node {} registered", given_name(v)));
        }
        NodesCommand::Approve { id } => {
            let v = client
                .post(&format!("/api/v1/node/{id}/approve"), json!({}))
                .await?;
            let shown = views::node(v)?;
            out.shown(&shown, |v| format!("Node {} approved", given_name(v)));
        }
        NodesCommand::Expire {
            id,
            expiry,
            disable,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if disable {
                query.append_pair("disableExpiry", "true");
            }
            if let Some(expiry) = &expiry {
                query.append_pair("expiry", expiry);
            }
            let v = client
                .post(
                    &format!("/api/v1/node/{id}/expire?{}", query.finish()),
                    json!({}),
                )
                .await?;
            let shown = views::node(v)?;
            out.shown(&shown, |v| {
                if disable {
                    format!("Node {} will not expire", given_name(v))
                } else {
                    format!(
                        "Node {} expires {}",
                        given_name(v),
                        v["expiry"].as_str().unwrap_or("now")
                    )
                }
            });
        }
        NodesCommand::Rename { id, new_name } => {
            let v = client
                .post(
                    &format!("/api/v1/node/{id}/rename/{}", path_segment(&new_name)),
                    json!({}),
                )
                .await?;
            let shown = views::node(v)?;
            out.shown(&shown, |v| format!("Node renamed to {}", given_name(v)));
        }
        NodesCommand::Delete { id } => {
            confirm(force, &format!("Delete node {id}?"))?;
            client.delete(&format!("/api/v1/node/{id}")).await?;
            // What headscale prints, whatever the format.
            out.headscale(&json!({ "Result": "Node deleted" }), || {
                "Node deleted".into()
            });
        }
        NodesCommand::Tag { id, tags } => {
            let tags: Vec<String> = tags.into_iter().filter(|t| !t.is_empty()).collect();
            let v = client
                .post(&format!("/api/v1/node/{id}/tags"), json!({ "tags": tags }))
                .await?;
            let shown = views::node(v)?;
            out.shown(&shown, |v| format!("Node tags: {}", v["tags"]));
        }
        NodesCommand::ListRoutes { id } => {
            let shown = views::nodes(client.get("/api/v1/node").await?, |n| {
                id.is_none_or(|id| n.id == id)
                    && !(n.approved_routes.is_empty()
                        && n.available_routes.is_empty()
                        && n.subnet_routes.is_empty())
            })?;
            out.shown_table(
                &shown,
                &[
                    ("ID", "id"),
                    ("Name", "name"),
                    ("Approved", "approved_routes"),
                    ("Available", "available_routes"),
                    ("Serving (primary)", "subnet_routes"),
                ],
            );
        }
        NodesCommand::ApproveRoutes { id, routes } => {
            let routes: Vec<String> = routes.into_iter().filter(|r| !r.is_empty()).collect();
            let v = client
                .post(
                    &format!("/api/v1/node/{id}/approve_routes"),
                    json!({ "routes": routes }),
                )
                .await?;
            let shown = views::node(v)?;
            out.shown(&shown, |v| {
                format!("Approved routes: {}", v["approved_routes"])
            });
        }
        NodesCommand::Attributes { id, action } => match action {
            None => {
                let id = id.ok_or_else(|| anyhow::anyhow!("give the node: --identifier N"))?;
                let v = client
                    .get(&format!("/api/v2/device/{id}/attributes"))
                    .await?;
                show_attributes(out, &v);
            }
            Some(AttributesCommand::Set {
                id,
                key,
                value,
                expiry,
                comment,
            }) => {
                let mut body = json!({ "value": attribute_value(&value) });
                if let Some(expiry) = expiry {
                    body["expiry"] = json!(expiry);
                }
                if let Some(comment) = comment {
                    body["comment"] = json!(comment);
                }
                let v = client
                    .post(
                        &format!("/api/v2/device/{id}/attributes/{}", key_segment(&key)),
                        body,
                    )
                    .await?;
                show_attributes(out, &v);
            }
            Some(AttributesCommand::Delete { id, key }) => {
                let v = client
                    .delete(&format!(
                        "/api/v2/device/{id}/attributes/{}",
                        key_segment(&key)
                    ))
                    .await?;
                show_attributes(out, &v);
            }
        },
        NodesCommand::Backfillips => {
            confirm(force, "Give every node the addresses it lacks?")?;
            let v = client
                .post("/api/v1/node/backfillips?confirmed=true", json!({}))
                .await?;
            let shown = views::backfill(v)?;
            out.shown(&shown, |v| format!("Changes: {}", v["changes"]));
        }
    }
    Ok(())
}

/// Gives each node of a list an `approval` cell for people: "pending approval" while it
/// waits for an administrator. Programs read `approved` (`-o json`).
fn with_approval_state(nodes: &mut Value) {
    for node in nodes.as_array_mut().into_iter().flatten() {
        let state = match node["approved"].as_bool() {
            Some(false) => "pending approval",
            _ => "approved",
        };
        node["approval"] = json!(state);
    }
}

//! The OpenAPI 3.1 description of the REST API, generated from the handlers' annotations and
//! completed here with what every route shares: bearer-key security (health, the Prometheus
//! page and the docs stay open), `?fields=` (naming the answer's own fields) and
//! `304 Not Modified` on every GET, the error envelope for every failure status, and links
//! from each create route to the routes of what it created. Served at `/api/openapi.json`,
//! with Swagger UI (bundled in the binary, nothing fetched from the internet) at `/docs`.

use axum::http::Method;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn, PathItem, PathsMap};
use utoipa::openapi::schema::{AnyOfBuilder, ArrayItems, Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};

use crate::rules::{Access, RuleBook};

/// The error envelope every failure answers with.
#[derive(Debug, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error inside the envelope.
#[derive(Debug, ToSchema)]
pub struct ErrorDetail {
    /// The machine-readable code, such as `invalid_argument` or `not_found`.
    pub code: String,
    /// A sentence for humans.
    pub message: String,
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Swarm",
        description = "The control plane for fleets of worker agents: submit tasks, let agents claim and report them, watch it all.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
pub struct ApiDoc;

/// The statuses any authenticated route may answer with the error envelope, and why.
const ERRORS: &[(&str, &str)] = &[
    ("400", "The request is malformed or breaks a rule."),
    ("401", "No api key, or an unknown or revoked one."),
    ("403", "The key's role may not do this."),
    ("404", "No such thing, or not yours to see."),
    (
        "409",
        "The thing exists already, or is not in a state that allows this.",
    ),
    ("413", "The body is larger than allowed."),
    ("429", "The key's rate limit is reached; see Retry-After."),
    (
        "500",
        "An unexpected failure; details are in the server log.",
    ),
    ("503", "A service behind the gateway is unavailable."),
    ("504", "The request ran out of time."),
];

/// Adds what every route shares to the description of the routes in `book`: bearer security
/// on the routes that take keys, the error envelope on every failure status they may answer,
/// the GET conventions, and links from creations to what they created.
pub fn apply_conventions(openapi: &mut utoipa::openapi::OpenApi, book: &RuleBook) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An api key: `Authorization: Bearer swarm_...`"))
                .build(),
        ),
    );
    let envelope = |why: &str| {
        ResponseBuilder::new()
            .description(why)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    let components = openapi.components.as_ref();
    for (path, item) in &mut openapi.paths.paths {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            let open = book
                .get(&method, path)
                .is_none_or(|rules| rules.access == Access::Open);
            if !open {
                operation.security = Some(vec![SecurityRequirement::new(
                    "api_key",
                    Vec::<String>::new(),
                )]);
            }
            for (status, why) in ERRORS {
                let applies = !open || matches!(*status, "400" | "500" | "504");
                if applies && !operation.responses.responses.contains_key(*status) {
                    operation
                        .responses
                        .responses
                        .insert((*status).to_owned(), RefOr::T(envelope(why)));
                }
            }
            if method == Method::GET {
                add_get_conventions(operation, components);
            }
        }
    }
    link_created(&mut openapi.paths.paths);
}

/// Links each create route's `201` answer to the routes of what it created: the `id` of the
/// task `POST /api/tasks` answers fills `{id}` of every `/api/tasks/{id}…` route.
fn link_created(paths: &mut PathsMap<String, PathItem>) {
    let by_id: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            [&item.get, &item.post, &item.put, &item.patch, &item.delete]
                .into_iter()
                .flatten()
                .filter_map(|operation| Some((path.clone(), operation.operation_id.clone()?)))
        })
        .filter(|(path, _)| path.contains("{id}"))
        .collect();
    for (path, item) in paths.iter_mut() {
        let Some(RefOr::T(created)) = item
            .post
            .as_mut()
            .and_then(|post| post.responses.responses.get_mut("201"))
        else {
            continue;
        };
        let own = format!("{path}/{{id}}");
        for (target, operation_id) in &by_id {
            if target == &own || target.starts_with(&format!("{own}/")) {
                let link = LinkBuilder::new()
                    .operation_id(operation_id)
                    .parameter("id", "$response.body#/id")
                    .build();
                created.links.insert(operation_id.clone(), RefOr::T(link));
            }
        }
    }
}

/// Documents `304 Not Modified` on a GET and, when it answers JSON, `?fields=`: a
/// comma-separated list of the answer's fields (any names when they are not fixed), and an
/// answer that may then hold only those fields.
fn add_get_conventions(operation: &mut Operation, components: Option<&Components>) {
    operation.responses.responses.insert(
        "304".to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description("The answer is unchanged since the `If-None-Match` ETag.")
                .build(),
        ),
    );
    let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") else {
        return;
    };
    let Some(RefOr::T(json)) = ok.content.get_mut("application/json") else {
        return;
    };
    let Some(answer) = json.schema.take() else {
        return;
    };
    let (answer, names) = match projection(&answer, components) {
        Some((projected, names)) => (
            RefOr::T(Schema::AnyOf(
                AnyOfBuilder::new().item(answer).item(projected).build(),
            )),
            names,
        ),
        None => (answer, Vec::new()),
    };
    json.schema = Some(answer);
    let mut schema = ObjectBuilder::new().schema_type(Type::String);
    if !names.is_empty() {
        let one = format!("(?:{})", names.join("|"));
        schema = schema.pattern(Some(format!("^{one}(?:,{one})*$")));
    }
    let mut fields = Parameter::new("fields");
    fields.parameter_in = ParameterIn::Query;
    fields.required = Required::False;
    fields.description = Some(
        "Only these top-level fields of each object, comma-separated (an unknown one is 400)."
            .to_owned(),
    );
    fields.schema = Some(RefOr::T(schema.build().into()));
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(RefOr::T(fields));
}

/// Describes what `?fields=` leaves of `answer`: the object, or each item of a page, with
/// none of its fields required; and the names it may project. `None` when the answer's fields
/// are not fixed (a free JSON object).
fn projection(
    answer: &RefOr<Schema>,
    components: Option<&Components>,
) -> Option<(RefOr<Schema>, Vec<String>)> {
    let answer = resolve(answer, components)?;
    let mut projected = answer.clone();
    let names = match projected.properties.get_mut("items") {
        Some(RefOr::T(Schema::Array(page))) => {
            let ArrayItems::RefOrSchema(item) = &mut page.items else {
                return None;
            };
            let (partial, names) = partial(resolve(item, components)?)?;
            **item = RefOr::T(Schema::Object(partial));
            names
        }
        _ => {
            let (partial, names) = partial(answer)?;
            projected = partial;
            names
        }
    };
    Some((RefOr::T(Schema::Object(projected)), names))
}

/// Returns `object` with none of its fields required, and their names; `None` when it has no
/// fixed fields.
fn partial(object: &Object) -> Option<(Object, Vec<String>)> {
    if object.properties.is_empty() {
        return None;
    }
    let mut partial = object.clone();
    partial.required.clear();
    partial.description = Some("Only the fields `?fields=` names.".to_owned());
    let names = partial.properties.keys().cloned().collect();
    Some((partial, names))
}

/// Follows references to the object schema `schema` names, if it is one.
fn resolve<'a>(
    schema: &'a RefOr<Schema>,
    components: Option<&'a Components>,
) -> Option<&'a Object> {
    match schema {
        RefOr::T(Schema::Object(object)) => Some(object),
        RefOr::Ref(reference) => {
            let name = reference
                .ref_location
                .strip_prefix("#/components/schemas/")?;
            resolve(components?.schemas.get(name)?, components)
        }
        RefOr::T(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The description the gateway serves.
    fn document() -> utoipa::openapi::OpenApi {
        crate::routes::api().1
    }

    /// The document committed for client generators, `docs/openapi.json`, is the one the
    /// gateway serves. `make openapi` (which sets `SWARM_BLESS_OPENAPI`) writes it anew.
    #[test]
    fn the_committed_document_is_the_served_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let served = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var_os("SWARM_BLESS_OPENAPI").is_some() {
            std::fs::write(&path, &served).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == served,
            "docs/openapi.json differs from the document the gateway serves: run `make openapi`"
        );
    }

    #[test]
    fn every_route_is_described_in_openapi_3_1() {
        let json = serde_json::to_value(document()).unwrap();
        assert!(
            json["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            json["openapi"]
        );
        let paths = json["paths"].as_object().unwrap();
        let (_, _, book) = crate::routes::api();
        let mut described = 0;
        for (method, path, rules) in book.iter() {
            let method = method.as_str().to_lowercase();
            let operation = &paths[path][&method];
            assert!(operation.is_object(), "{method} {path} is described");
            let open = rules.access == Access::Open;
            assert_eq!(
                operation.get("security").is_some(),
                !open,
                "{method} {path}"
            );
            assert!(operation["responses"]["500"].is_object(), "{method} {path}");
            described += 1;
        }
        let operations: usize = paths
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(
            described, operations,
            "every described operation is a route"
        );
        assert_eq!(described, 51);
        let create = &paths["/api/tasks"]["post"];
        assert_eq!(
            create["responses"]["400"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        assert!(json["components"]["securitySchemes"]["api_key"].is_object());
    }

    #[test]
    fn parameters_are_described_once_and_fields_name_the_answers_fields() {
        let json = serde_json::to_value(document()).unwrap();
        let parameters = |path: &str, method: &str| -> Vec<serde_json::Value> {
            json["paths"][path][method]["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        for (path, item) in json["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let mut names: Vec<String> = parameters(path, method)
                    .iter()
                    .map(|p| format!("{} {}", p["in"], p["name"]))
                    .collect();
                let described = names.len();
                names.sort();
                names.dedup();
                assert_eq!(names.len(), described, "{method} {path}: {names:?}");
            }
        }
        let fields_pattern = |path: &str| {
            parameters(path, "get")
                .into_iter()
                .find(|p| p["name"] == "fields")
                .map(|p| p["schema"]["pattern"].as_str().map(str::to_owned))
        };
        let task = fields_pattern("/api/tasks/{id}").unwrap().unwrap();
        assert!(task.contains("|status|"), "{task}");
        assert_eq!(
            fields_pattern("/api/tasks").unwrap().unwrap(),
            task,
            "a page projects its items"
        );
        assert_eq!(
            fields_pattern("/api/agents/{id}/config"),
            Some(None),
            "a free object takes any names"
        );
        assert_eq!(fields_pattern("/metrics"), None, "text is not projected");
        let answer = |path: &str| {
            json["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
                ["anyOf"]
                .clone()
        };
        let task = answer("/api/tasks/{id}");
        assert_eq!(task[0]["$ref"], "#/components/schemas/TaskView");
        assert!(task[1]["properties"]["status"].is_object(), "{task}");
        assert!(
            task[1].get("required").is_none(),
            "a projection lacks fields"
        );
        let page = answer("/api/tasks");
        assert!(
            page[1]["required"]
                .as_array()
                .unwrap()
                .contains(&"items".into())
        );
        assert!(
            page[1]["properties"]["items"]["items"]
                .get("required")
                .is_none()
        );
    }

    #[test]
    fn operations_have_unique_ids_and_creations_link_to_what_they_created() {
        let json = serde_json::to_value(document()).unwrap();
        let mut ids: Vec<&str> = json["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|operation| operation["operationId"].as_str().unwrap())
            .collect();
        let operations = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), operations, "{ids:?}");
        let links = |path: &str| -> Vec<String> {
            let links = &json["paths"][path]["post"]["responses"]["201"]["links"];
            links.as_object().map_or_else(Vec::new, |links| {
                assert!(
                    links
                        .values()
                        .all(|l| l["parameters"]["id"] == "$response.body#/id")
                );
                links.keys().cloned().collect()
            })
        };
        let task = links("/api/tasks");
        for id in [
            "getTask",
            "cancelTask",
            "completeTask",
            "addMessage",
            "listTaskMessages",
        ] {
            assert!(task.contains(&id.to_owned()), "{task:?}");
        }
        assert!(!task.contains(&"claimTasks".to_owned()));
        assert!(links("/api/agents").contains(&"heartbeat".to_owned()));
        assert_eq!(links("/api/keys"), ["revokeKey"]);
    }
}

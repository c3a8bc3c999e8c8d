// What a Kubernetes API request is about — verb, API group, resource,
// subresource, namespace and name — derived from its method and path the way
// the apiserver's RequestInfoFactory does, so audit lines and metric labels use
// the vocabulary of Kubernetes audit and RBAC. Non-resource paths (/version,
// /healthz, /openapi/v3) get the lowercased HTTP method as their verb.

export interface RequestInfo {
  /** get, list, watch, create, update, patch, delete, deletecollection, proxy, or an HTTP method for non-resource paths. */
  verb: string;
  isResourceRequest: boolean;
  /** The member path without the query: `/api/v1/namespaces/default/pods`. */
  path: string;
  apiGroup: string;
  apiVersion: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
}

const METHOD_VERBS: Record<string, string> = {
  POST: "create",
  GET: "get",
  HEAD: "get",
  PUT: "update",
  PATCH: "patch",
  DELETE: "delete",
};
/** Path prefixes that name the verb themselves (deprecated `/api/v1/watch/...` and `/proxy/...` forms). */
const SPECIAL_VERBS = new Set(["proxy", "watch"]);
/** Subresources of a namespace itself, not resources inside it. */
const NAMESPACE_SUBRESOURCES = new Set(["status", "finalize"]);
/** strconv.ParseBool's spellings of true, which the apiserver uses for ?watch=. */
const TRUE_SPELLINGS = new Set(["1", "t", "T", "TRUE", "true", "True"]);

/** `target` is the member path with its query, as forwarded (`/api/v1/pods?watch=1`). */
export function requestInfo(method: string, target: string): RequestInfo {
  const queryAt = target.indexOf("?");
  const path = queryAt < 0 ? target : target.slice(0, queryAt);
  const query = new URLSearchParams(queryAt < 0 ? "" : target.slice(queryAt + 1));
  const nonResource: RequestInfo = {
    verb: method.toLowerCase(),
    isResourceRequest: false,
    path,
    apiGroup: "",
    apiVersion: "",
    resource: "",
    subresource: "",
    namespace: "",
    name: "",
  };
  let parts = path.split("/").filter((p) => p.length > 0);
  if (parts.length < 2 || (parts[0] !== "api" && parts[0] !== "apis")) return nonResource;
  const info: RequestInfo = { ...nonResource, isResourceRequest: true };
  if (parts[0] === "api") {
    info.apiVersion = parts[1]!;
    parts = parts.slice(2);
  } else {
    if (parts.length < 3) return nonResource; // /apis/<group>: discovery
    info.apiGroup = parts[1]!;
    info.apiVersion = parts[2]!;
    parts = parts.slice(3);
  }
  if (parts.length === 0) return nonResource; // /api/v1: discovery
  if (SPECIAL_VERBS.has(parts[0]!)) {
    if (parts.length < 2) return nonResource;
    info.verb = parts[0]!;
    parts = parts.slice(1);
  } else {
    info.verb = METHOD_VERBS[method.toUpperCase()] ?? method.toLowerCase();
  }
  if (parts[0] === "namespaces" && parts.length > 1) {
    info.namespace = parts[1]!;
    if (parts.length > 2 && !NAMESPACE_SUBRESOURCES.has(parts[2]!)) parts = parts.slice(2);
  }
  info.resource = parts[0] ?? "";
  info.name = parts[1] ?? "";
  if (parts.length >= 3 && info.verb !== "proxy") info.subresource = parts[2]!;
  if (info.name === "" && info.verb === "get") {
    info.verb = TRUE_SPELLINGS.has(query.get("watch") ?? "") ? "watch" : "list";
  }
  if (info.name === "" && (info.verb === "list" || info.verb === "watch")) {
    // A list or watch narrowed to one object by field selector is about that object, as in the apiserver.
    const selected = /^metadata\.name==?([^,]+)$/.exec(query.get("fieldSelector") ?? "");
    if (selected) info.name = selected[1]!;
  }
  if (info.name === "" && info.verb === "delete") info.verb = "deletecollection";
  return info;
}

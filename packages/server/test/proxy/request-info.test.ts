import t from "tap";
import { requestInfo } from "../../src/proxy/request-info.js";

const cases: Array<[string, string, Partial<ReturnType<typeof requestInfo>>]> = [
  [
    "GET",
    "/api/v1/namespaces/default/pods",
    { verb: "list", resource: "pods", namespace: "default", name: "" },
  ],
  ["GET", "/api/v1/namespaces/default/pods?watch=1&resourceVersion=5", { verb: "watch", resource: "pods" }],
  ["GET", "/api/v1/pods?watch=true", { verb: "watch", resource: "pods", namespace: "" }],
  ["GET", "/api/v1/pods?watch=false", { verb: "list" }],
  ["GET", "/api/v1/namespaces/kube-system/pods/p1", { verb: "get", name: "p1", namespace: "kube-system" }],
  [
    "GET",
    "/api/v1/namespaces/default/pods/p1/log?follow=true",
    { verb: "get", subresource: "log", name: "p1" },
  ],
  ["POST", "/api/v1/namespaces/default/pods/p1/exec?command=ls", { verb: "create", subresource: "exec" }],
  ["GET", "/api/v1/namespaces/default/pods/p1/exec?command=ls", { verb: "get", subresource: "exec" }],
  ["POST", "/api/v1/namespaces/default/pods/p1/portforward", { verb: "create", subresource: "portforward" }],
  ["POST", "/api/v1/namespaces/default/configmaps", { verb: "create", resource: "configmaps", name: "" }],
  ["PUT", "/api/v1/namespaces/default/configmaps/c", { verb: "update", name: "c" }],
  [
    "PATCH",
    "/apis/apps/v1/namespaces/default/deployments/d/scale",
    { verb: "patch", apiGroup: "apps", apiVersion: "v1", resource: "deployments", subresource: "scale" },
  ],
  ["DELETE", "/api/v1/namespaces/default/configmaps/c", { verb: "delete", name: "c" }],
  ["DELETE", "/api/v1/namespaces/default/configmaps", { verb: "deletecollection" }],
  ["GET", "/api/v1/namespaces", { verb: "list", resource: "namespaces", namespace: "" }],
  [
    "GET",
    "/api/v1/namespaces/default",
    { verb: "get", resource: "namespaces", name: "default", namespace: "default" },
  ],
  [
    "PUT",
    "/api/v1/namespaces/default/finalize",
    { verb: "update", resource: "namespaces", name: "default", subresource: "finalize" },
  ],
  ["GET", "/api/v1/watch/namespaces/default/pods", { verb: "watch", resource: "pods", namespace: "default" }],
  ["GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn1", { verb: "list", resource: "nodes", name: "n1" }],
  [
    "GET",
    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
    { apiGroup: "coordination.k8s.io", resource: "leases" },
  ],
  ["GET", "/version", { verb: "get", isResourceRequest: false, resource: "" }],
  ["GET", "/apis", { isResourceRequest: false }],
  ["GET", "/apis/apps", { isResourceRequest: false }],
  ["GET", "/api/v1", { isResourceRequest: false }],
  ["GET", "/openapi/v3?x=1", { isResourceRequest: false, path: "/openapi/v3" }],
  ["GET", "/api/v1/proxy", { isResourceRequest: false }],
  [
    "GET",
    "/api/v1/namespaces/default/services/s/proxy/a/b",
    { verb: "get", subresource: "proxy", name: "s" },
  ],
];

for (const [method, target, want] of cases) {
  t.test(`${method} ${target}`, async (t) => {
    const got = requestInfo(method, target);
    for (const [key, value] of Object.entries(want)) t.equal(got[key as keyof typeof got], value, key);
  });
}

// Issue 14 part B: three active tether-server replicas on the Kubernetes store
// of a real host cluster, behind HAProxy (TCP, round robin) as a Service would
// put them, two real members with agents dialing the balancer. Every member
// answers through every replica (the ones that do not hold its tunnel forward
// one hop to the owner: plain GET, watch, exec, port-forward); the hop's added
// latency is measured; a caller's Tether-Replica-* headers are refused and
// the replica listener takes replica certificates only; a forwarded request
// for a generation the owner does not hold gets 503, never a second hop;
// kill -9 of an owner makes its members reachable again through the others
// (time-to-reachable over a few trials); an owner paused (SIGSTOP) while
// another replica took its cluster over neither serves it nor takes it back.
import { createServer } from "node:http";
import { Agent, request } from "node:https";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { connect as tlsConnect } from "node:tls";
import { cp } from "node:fs/promises";
import t from "tap";
import { until } from "./fixture.js";
import { rawRequest } from "./raw-client.js";
import { get, LEASE_SECONDS, median, type Replica, startFleet, status } from "./replica-fleet.js";
import { signal } from "./tether-processes.js";

const TRIALS = 5;

t.test("several active replicas", async (t) => {
  const fleet = await startFleet(t, {
    // Long: a paused owner must come back with its agent session intact (the split-brain case).
    serverDeadPeerSeconds: 60,
  });
  const { m1, m2, members, dir, replicas, lbUrl, ca, tokens, agents } = fleet;
  const { startReplica, startAgent, leaseOf, holderOf, agentConnected, kubeconfigVia, byId, notOwner } =
    fleet;

  await t.test("every member through every replica", async (t) => {
    for (const [name, member] of Object.entries(members)) {
      const owner = await holderOf(name);
      t.ok(byId(owner), `${name} is held by ${owner}`);
      const direct = await member.kubectl(["get", "namespaces", "-o", "name"]);
      let hops = 0;
      for (const r of replicas) {
        const got = await member.kubectl(["get", "namespaces", "-o", "name"], {
          kubeconfig: await kubeconfigVia(name, r),
        });
        t.equal(got.code, 0, `${name} through ${r.id}: ${got.stderr}`);
        t.equal(got.stdout, direct.stdout, `${name} through ${r.id} answers as the member does`);
        if (r.id !== owner) hops++;
      }
      t.equal(hops, 2, `${name}: two of the three replicas forwarded one hop to ${owner}`);
    }
  });

  await t.test("a watch across the hop", async (t) => {
    const r = await notOwner("m1");
    const watch = m1.spawnKubectl(["get", "configmaps", "-w", "--output-watch-events"], {
      kubeconfig: await kubeconfigVia("m1", r),
    });
    t.teardown(() => watch.stop());
    await m1.kubectl(["create", "configmap", "before-watch"]);
    await watch.waitFor(/ADDED\s+before-watch/);
    await m1.kubectl(["create", "configmap", "watched-across-the-hop"]);
    await watch.waitFor(/ADDED\s+watched-across-the-hop/);
    await m1.kubectl(["delete", "configmap", "watched-across-the-hop"]);
    await watch.waitFor(/DELETED\s+watched-across-the-hop/);
    t.pass(`ADDED and DELETED arrived through ${r.id}, which does not hold m1`);
  });

  for (const transport of ["websocket", "spdy"] as const) {
    await t.test(`exec and port-forward over ${transport} across the hop`, async (t) => {
      const r = await notOwner("m2");
      const kubeconfig = await kubeconfigVia("m2", r);
      const env = {
        ...process.env,
        KUBECTL_REMOTE_COMMAND_WEBSOCKETS: transport === "websocket" ? "true" : "false",
        KUBECTL_PORT_FORWARD_WEBSOCKETS: transport === "websocket" ? "true" : "false",
      };
      const exec = await m2.kubectl(["exec", "-i", "box", "--", "sh", "-c", "cat; echo; echo out-$0 >&2"], {
        kubeconfig,
        input: `in-${transport}`,
        env,
      });
      t.equal(exec.code, 0, exec.stderr);
      t.equal(exec.stdout, `in-${transport}\n`, "stdin reached the container and stdout came back");
      t.match(exec.stderr, /out-sh/, "stderr came back");
      const failed = await m2.kubectl(["exec", "box", "--", "sh", "-c", "exit 7"], { kubeconfig, env });
      t.equal(failed.code, 7, "the exit code came back");

      const http = createServer((req, res) => res.end(`hello ${req.url}`));
      await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
      t.teardown(() => new Promise<void>((resolve) => http.close(() => resolve())));
      const port = (http.address() as { port: number }).port;
      const pf = m2.spawnKubectl(["port-forward", "pod/box", `:${port}`], { kubeconfig, env });
      t.teardown(() => pf.stop());
      const m = await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) ->/);
      for (let i = 0; i < 3; i++) {
        t.equal(await (await fetch(`http://127.0.0.1:${m[1]}/try${i}`)).text(), `hello /try${i}`);
      }
    });
  }

  await t.test("the hop's added latency", async (t) => {
    const owner = byId(await holderOf("m1"))!;
    const other = await notOwner("m1");
    const rounds = 40;
    const time = async (r: Replica) => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const samples: number[] = [];
      for (let i = 0; i < rounds + 5; i++) {
        const start = performance.now();
        const code = await status(`${r.url}/clusters/m1/version`, {
          ca: ca.certPem,
          token: tokens.m1!,
          agent,
        });
        if (i >= 5) samples.push(performance.now() - start);
        if (code !== 200) t.fail(`GET /version through ${r.id}: ${code}`);
      }
      agent.destroy();
      return samples;
    };
    const direct = await time(owner);
    const hop = await time(other);
    t.comment(
      `GET /version, ${rounds} sequential on one kept-alive connection: through the owner p50 ${median(direct).toFixed(2)} ms, ` +
        `through another replica (one hop) p50 ${median(hop).toFixed(2)} ms: the hop adds ${(median(hop) - median(direct)).toFixed(2)} ms`,
    );
  });

  await t.test(
    "hostile: replica headers from a caller, other certificates on the replica listener",
    async (t) => {
      const r = replicas[0]!;
      const forged = Buffer.from(
        JSON.stringify({ user: "mallory", groups: ["system:masters"], via: "token", clusters: ["*"] }),
      ).toString("base64url");
      const attempts: Record<string, string>[] = [
        { authorization: `Bearer ${tokens.m1}`, "tether-replica-caller": forged },
        { "tether-replica-caller": forged, "tether-replica-owner": `${r.id}/0` },
        { authorization: `Bearer ${tokens.m1}`, "Tether-Replica-Source": "10.0.0.1" },
      ];
      for (const headers of attempts) {
        const res = await rawRequest({ url: r.url, caPem: ca.certPem }, "/clusters/m1/api", { headers });
        t.equal(res.status, 400, `refused: ${Object.keys(headers).join(", ")}`);
        t.match(JSON.parse(res.body), { kind: "Status", code: 400, message: /Tether-Replica-\* headers/ });
      }
      const replicaTarget = `https://127.0.0.1:${r.replicaPort}`;
      const noCert = await new Promise<string>((resolve) => {
        const socket = tlsConnect({
          host: "127.0.0.1",
          port: r.replicaPort,
          ca: ca.certPem,
          checkServerIdentity: () => undefined,
        });
        socket.once("secureConnect", () => socket.write("GET /clusters/m1/api HTTP/1.1\r\nHost: x\r\n\r\n"));
        socket.once("data", (d: Buffer) => resolve(d.toString()));
        socket.once("error", (err) => resolve(err.message));
        socket.once("close", () => resolve("closed"));
      });
      t.notMatch(
        noCert,
        /^HTTP/,
        `no client certificate: no TLS session, no answer (${noCert.slice(0, 80)})`,
      );
      const user = await ca.issueUserCertificate("alice", ["admins"]);
      const asUser = await hopRequest(replicaTarget, ca.certPem, user, "/clusters/m1/api", {
        "tether-replica-owner": "replica-0/0",
        "tether-replica-caller": forged,
      });
      t.equal(asUser.status, 403, "a user certificate is not a replica's");
    },
  );

  await t.test(
    "fencing on arrival: the owner serves only its own generation, and no second hop",
    async (t) => {
      const asReplica = await ca.issueReplicaCertificate("test-replica");
      const caller = Buffer.from(
        JSON.stringify({ user: "alice", groups: ["admins"], via: "token", clusters: ["m1"] }),
      ).toString("base64url");
      const lease = await leaseOf("m1");
      const owner = byId(lease?.holderIdentity)!;
      const generation = lease?.leaseTransitions ?? 0;
      const hop = (r: Replica, ownerHeader: string) =>
        hopRequest(`https://127.0.0.1:${r.replicaPort}`, ca.certPem, asReplica, "/clusters/m1/api", {
          "tether-replica-owner": ownerHeader,
          "tether-replica-caller": caller,
        });
      t.equal((await hop(owner, `${owner.id}/${generation}`)).status, 200, "the owner serves its generation");
      t.equal(
        (await hop(owner, `${owner.id}/${generation + 1}`)).status,
        503,
        "not a generation it does not hold",
      );
      const other = await notOwner("m1");
      const second = await hop(other, `${other.id}/${generation}`);
      t.equal(second.status, 503, "a replica that does not hold m1 does not forward again");
      t.match(second.body, /one hop at most/);
    },
  );

  await t.test("kill -9 of an owner: its members come back through the other replicas", async (t) => {
    const trials: number[] = [];
    /** Failed loop requests, and whether they fell between a kill and its members being reachable again. */
    const failures: { at: number; code: number; name: string; outage: boolean; what: string }[] = [];
    let outage = false;
    const kills: [number, number, number][] = [];
    let requests = 0;
    let stop = false;
    // A GET loop through the balancer for both members (about 20 requests per second).
    const loop = (async () => {
      while (!stop) {
        for (const name of Object.keys(members)) {
          requests++;
          const during = outage;
          const { code, what } = await get(`${lbUrl}/clusters/${name}/version`, {
            ca: ca.certPem,
            token: tokens[name]!,
          });
          if (code !== 200) failures.push({ at: Date.now(), code, name, outage: during || outage, what });
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    for (let trial = 0; trial < TRIALS; trial++) {
      const cluster = trial % 2 === 0 ? "m1" : "m2";
      const victim = byId(await holderOf(cluster))!;
      const held: string[] = [];
      for (const name of Object.keys(members)) if ((await holderOf(name)) === victim.id) held.push(name);
      const killedAt = performance.now();
      const kill: [number, number, number] = [Date.now(), 0, 0];
      kills.push(kill);
      outage = true;
      signal(victim.proc!, "SIGKILL");
      await victim.proc!.exited;
      await until(
        `${held.join(", ")} reachable again after ${victim.id} was killed`,
        async () => {
          for (const name of held) {
            if (
              (await status(`${lbUrl}/clusters/${name}/version`, {
                ca: ca.certPem,
                token: tokens[name]!,
              })) !== 200
            )
              return false;
          }
          return true;
        },
        30_000,
      );
      const took = performance.now() - killedAt;
      outage = false;
      kill[1] = Date.now();
      trials.push(took);
      for (const name of held) t.not(await holderOf(name), victim.id, `${name} moved off ${victim.id}`);
      t.comment(
        `trial ${trial + 1}: killed ${victim.id} (held ${held.join(", ")}): reachable again after ${took.toFixed(0)} ms`,
      );
      await startReplica(victim);
      kill[2] = Date.now();
      // A starting replica corrects clusters a dead server left marked connected, but not those another holds.
      await new Promise((r) => setTimeout(r, 1_000));
      for (const name of Object.keys(members)) {
        t.equal(
          await agentConnected(name),
          "True",
          `${name} still shows AgentConnected after ${victim.id} restarted`,
        );
      }
    }
    stop = true;
    await loop;
    const inOutage = failures.filter((f) => f.outage);
    const after = failures.filter((f) => !f.outage);
    const codes = (fs: typeof failures) => {
      const counts = new Map<number, number>();
      for (const f of fs) counts.set(f.code, (counts.get(f.code) ?? 0) + 1);
      return [...counts].map(([c, n]) => `${c}: ${n}`).join(", ");
    };
    t.comment(
      `time to reachable over ${trials.length} trials: p50 ${median(trials).toFixed(0)} ms, max ${Math.max(...trials).toFixed(0)} ms; ` +
        `GET loop through the balancer: ${requests} requests, ${inOutage.length} failed between a kill and reachable again (${codes(inOutage)}), ` +
        `${after.length} outside those windows (${codes(after)}; 0 = connection failure)`,
    );
    const seen = new Map<string, number>();
    for (const f of after) seen.set(f.what, (seen.get(f.what) ?? 0) + 1);
    for (const [what, n] of seen) t.comment(`outside the windows, ${n}×: ${what}`);
    for (const f of after.slice(0, 5))
      t.comment(`failure at ${new Date(f.at).toISOString()} for ${f.name}: ${f.what}`);
    for (const [i, k] of kills.entries())
      t.comment(
        `kill ${i + 1} at ${new Date(k[0]).toISOString()}, reachable ${new Date(k[1]).toISOString()}, restarted ${new Date(k[2]).toISOString()}`,
      );
    t.equal(trials.length, TRIALS);
    t.equal(
      after.length,
      0,
      "no request failed once the members were reachable again (the killed replica's restart included)",
    );
  });

  await t.test(
    "an owner paused past its own view of the Lease serves nothing until it renewed",
    async (t) => {
      // m2's agent again, with a long dead-peer timeout: it keeps its session through the pause.
      await agents.m2!.stop();
      agents.m2 = startAgent("m2", lbUrl, join(dir, "agent-state-m2"), 60);
      await until("m2 reachable through its restarted agent", async () => {
        const owner = byId(await holderOf("m2"));
        return (
          !!owner &&
          (await status(`${owner.url}/clusters/m2/version`, { ca: ca.certPem, token: tokens.m2! })) === 200
        );
      });
      const lease = await leaseOf("m2");
      const owner = byId(lease?.holderIdentity)!;
      const asReplica = await ca.issueReplicaCertificate("test-replica");
      const caller = Buffer.from(
        JSON.stringify({ user: "alice", groups: ["admins"], via: "token", clusters: ["m2"] }),
      ).toString("base64url");
      const headers = {
        "tether-replica-owner": `${owner.id}/${lease?.leaseTransitions ?? 0}`,
        "tether-replica-caller": caller,
      };
      const pending = await openHop(`https://127.0.0.1:${owner.replicaPort}`, ca.certPem, asReplica);
      // Longer than two thirds of the lease after its last renewal, shorter than the lease (nobody else may
      // take it over) and than the tunnel's probe (the agent keeps its session).
      signal(owner.proc!, "SIGSTOP");
      await new Promise((r) => setTimeout(r, LEASE_SECONDS * 800));
      const stale = pending.send("/clusters/m2/api", headers);
      signal(owner.proc!, "SIGCONT");
      const answer = await stale;
      t.equal(
        answer.status,
        503,
        "the first request after the pause is refused: by its own clock the lease may have lapsed",
      );
      await until("the owner serves m2 again once it renewed", async () => {
        const r = await hopRequest(
          `https://127.0.0.1:${owner.replicaPort}`,
          ca.certPem,
          asReplica,
          "/clusters/m2/api",
          headers,
        );
        return r.status === 200;
      });
      t.equal(await holderOf("m2"), owner.id, "nobody took the Lease meanwhile");
    },
  );

  await t.test("split brain: a paused owner neither serves nor takes back the cluster", async (t) => {
    // m1's agent again, with a long dead-peer timeout: it keeps its session with the paused owner.
    await agents.m1!.stop();
    agents.m1 = startAgent("m1", lbUrl, join(dir, "agent-state-m1"), 60);
    await until("m1 reachable through its restarted agent", async () => {
      const owner = byId(await holderOf("m1"));
      return (
        !!owner &&
        (await status(`${owner.url}/clusters/m1/version`, { ca: ca.certPem, token: tokens.m1! })) === 200
      );
    });
    const owner = byId(await holderOf("m1"))!;
    const generation = (await leaseOf("m1"))?.leaseTransitions ?? 0;
    const other = replicas.find((r) => r.id !== owner.id)!;
    const asReplica = await ca.issueReplicaCertificate("test-replica");
    const caller = Buffer.from(
      JSON.stringify({ user: "alice", groups: ["admins"], via: "token", clusters: ["m1"] }),
    ).toString("base64url");
    // A second agent of m1 (the first one's credentials) comes up on another replica while the owner is paused;
    // the first agent's session with the paused owner stays up (the servers' dead-peer timeout is 60 s).
    const pending = await openHop(`https://127.0.0.1:${owner.replicaPort}`, ca.certPem, asReplica);
    signal(owner.proc!, "SIGSTOP");
    let resumed = false;
    t.teardown(() => {
      if (!resumed) signal(owner.proc!, "SIGCONT");
    });
    const stateDir = join(dir, "agent-state-m1-second");
    await cp(join(dir, "agent-state-m1"), stateDir, { recursive: true });
    const second = startAgent("m1", other.url, stateDir);
    t.teardown(() => second.stop());
    await until("the other replica took m1 over", async () => (await holderOf("m1")) === other.id);
    t.equal(
      await status(`${other.url}/clusters/m1/version`, { ca: ca.certPem, token: tokens.m1! }),
      200,
      "m1 is served by its new owner",
    );
    // Well past the paused owner's own view of its lease (two thirds of it after its last renewal).
    await new Promise((r) => setTimeout(r, LEASE_SECONDS * 1000));
    // Sent while it is paused: the first thing the owner reads when it wakes, before any renewal can answer.
    const stale = pending.send("/clusters/m1/api", {
      "tether-replica-owner": `${owner.id}/${generation}`,
      "tether-replica-caller": caller,
    });
    signal(owner.proc!, "SIGCONT");
    resumed = true;
    const answer = await stale;
    t.equal(answer.status, 503, "the old owner refuses a hop for the generation it held before the pause");
    await until(
      "the old owner routes m1 to the new one",
      async () =>
        (await status(`${owner.url}/clusters/m1/version`, { ca: ca.certPem, token: tokens.m1! })) === 200,
    );
    await new Promise((r) => setTimeout(r, LEASE_SECONDS * 1000));
    t.not(await holderOf("m1"), owner.id, "the old owner did not take the Lease back");
    const again = await hopRequest(
      `https://127.0.0.1:${owner.replicaPort}`,
      ca.certPem,
      asReplica,
      "/clusters/m1/api",
      {
        "tether-replica-owner": `${owner.id}/${generation}`,
        "tether-replica-caller": caller,
      },
    );
    t.equal(again.status, 503, "nor serves it afterwards");
  });
});

type Identity = { certPem: string; keyPem?: string };

function tlsOptions(caPem: string, id: Identity) {
  return {
    ca: caPem,
    cert: id.certPem,
    key: id.keyPem!,
    // Replica listeners present replica certificates, named by URI, not by address.
    checkServerIdentity: () => undefined,
  };
}

function hopRequest(
  base: string,
  caPem: string,
  id: Identity,
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}${path}`,
      { ...tlsOptions(caPem, id), agent: false, headers, timeout: 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
        );
      },
    );
    req.on("timeout", () => req.destroy(new Error("no answer")));
    req.on("error", reject);
    req.end();
  });
}

/** A kept-alive connection to a replica listener, opened now, whose one request is sent later. */
async function openHop(base: string, caPem: string, id: Identity) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ...tlsOptions(caPem, id) });
  // Opens the TLS connection while the peer runs.
  await new Promise<void>((resolve, reject) => {
    const req = request(
      `${base}/clusters/m1/api`,
      { agent, headers: { "tether-replica-owner": "x" } },
      (res) => {
        res.resume();
        res.on("end", () => resolve());
      },
    );
    req.on("error", reject);
    req.end();
  });
  return {
    send(path: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
      return new Promise((resolve, reject) => {
        const req = request(`${base}${path}`, { agent, headers, timeout: 20_000 }, (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            agent.destroy();
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") });
          });
        });
        req.on("timeout", () => req.destroy(new Error("no answer")));
        req.on("error", reject);
        req.end();
      });
    },
  };
}

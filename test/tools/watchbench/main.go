// watchbench: WATCHES concurrent client-go watches on the ConfigMaps of one
// namespace through one rest.Config, as an operator holding many informers
// would. It prints "ready" once every watch has its response head, then the
// wall-clock time (ms since the epoch) each watch received each ADDED event
// whose name starts with "ev-", the TCP connections it dialled and the
// protocols of its responses, as JSON, once every watch saw EVENTS of them.
// The bench creates the ConfigMaps and compares the times with its own.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type output struct {
	Connections int64                `json:"connections"`
	Reopened    int64                `json:"reopened"`
	Responses   map[string]int       `json:"responses"`
	Received    map[string][]float64 `json:"received"`
}

type recorder struct {
	next http.RoundTripper
	mu   *sync.Mutex
	seen map[string]int
}

func (r recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		r.mu.Lock()
		r.seen[fmt.Sprintf("%s %d", resp.Proto, resp.StatusCode)]++
		r.mu.Unlock()
	}
	return resp, err
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "watchbench: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: watchbench KUBECONFIG NAMESPACE WATCHES EVENTS")
	}
	namespace := os.Args[2]
	watches, err1 := strconv.Atoi(os.Args[3])
	events, err2 := strconv.Atoi(os.Args[4])
	if err1 != nil || err2 != nil || watches < 1 || events < 1 {
		fail("WATCHES and EVENTS must be positive integers")
	}
	config, err := clientcmd.BuildConfigFromFlags("", os.Args[1])
	if err != nil {
		fail("kubeconfig: %v", err)
	}
	// Starting the watches is not what is measured: no client-side throttling.
	config.QPS = 10_000
	config.Burst = 10_000
	var mu sync.Mutex
	seen := map[string]int{}
	config.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return recorder{rt, &mu, seen} }
	var dials, reopened atomic.Int64
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	config.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		dials.Add(1)
		return dialer.DialContext(ctx, network, address)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		fail("client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	configMaps := client.CoreV1().ConfigMaps(namespace)
	list, err := configMaps.List(ctx, metav1.ListOptions{})
	if err != nil {
		fail("list: %v", err)
	}
	received := map[string][]float64{}
	var started, done sync.WaitGroup
	started.Add(watches)
	done.Add(watches)
	for i := 0; i < watches; i++ {
		go func() {
			defer done.Done()
			w, err := configMaps.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
			started.Done()
			if err != nil {
				fail("watch: %v", err)
			}
			defer func() { w.Stop() }()
			resourceVersion := list.ResourceVersion
			for count := 0; count < events; {
				select {
				case ev, ok := <-w.ResultChan():
					if !ok {
						// The apiserver may end a watch at any time; an informer watches again from
						// the last resourceVersion it saw, and so does this client.
						reopened.Add(1)
						w, err = configMaps.Watch(ctx, metav1.ListOptions{ResourceVersion: resourceVersion})
						if err != nil {
							fail("a watch closed after %d events and could not resume: %v", count, err)
						}
						continue
					}
					at := float64(time.Now().UnixNano()) / 1e6
					cm, isCM := ev.Object.(*corev1.ConfigMap)
					if isCM {
						resourceVersion = cm.ResourceVersion
					}
					if ev.Type != watch.Added || !isCM || !strings.HasPrefix(cm.Name, "ev-") {
						continue
					}
					count++
					mu.Lock()
					received[cm.Name] = append(received[cm.Name], at)
					mu.Unlock()
				case <-ctx.Done():
					fail("a watch saw %d of %d events: %v", count, events, ctx.Err())
				}
			}
		}()
	}
	started.Wait()
	fmt.Println("ready")
	done.Wait()
	mu.Lock()
	out := output{Connections: dials.Load(), Reopened: reopened.Load(), Responses: seen, Received: received}
	mu.Unlock()
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("output: %v", err)
	}
}

// clientgo: client-go against a kubeconfig (Tether's, in the e2e tests).
// Runs a list, a watch and an informer on ConfigMaps in one namespace and
// prints, as JSON, what it saw and how: the protocol of every response and
// the TCP connections it dialled. It exits non-zero when a step fails.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

type result struct {
	Protocols      map[string]int `json:"protocols"`
	Connections    int64          `json:"connections"`
	Listed         int            `json:"listed"`
	WatchEvent     string         `json:"watchEvent"`
	InformerSynced bool           `json:"informerSynced"`
	InformerAdded  string         `json:"informerAdded"`
}

type protocols struct {
	mu   sync.Mutex
	seen map[string]int
}

type recorder struct {
	next http.RoundTripper
	p    *protocols
}

func (r recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		r.p.mu.Lock()
		r.p.seen[resp.Proto]++
		r.p.mu.Unlock()
	}
	return resp, err
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "clientgo: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: clientgo KUBECONFIG NAMESPACE")
	}
	namespace := os.Args[2]
	config, err := clientcmd.BuildConfigFromFlags("", os.Args[1])
	if err != nil {
		fail("kubeconfig: %v", err)
	}
	seen := &protocols{seen: map[string]int{}}
	config.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return recorder{rt, seen} }
	var dials atomic.Int64
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	config.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		dials.Add(1)
		return dialer.DialContext(ctx, network, address)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		fail("client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	configMaps := client.CoreV1().ConfigMaps(namespace)
	var out result

	list, err := configMaps.List(ctx, metav1.ListOptions{})
	if err != nil {
		fail("list: %v", err)
	}
	out.Listed = len(list.Items)

	w, err := configMaps.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		fail("watch: %v", err)
	}
	create := func(name string) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"k": "v"}}
		if _, err := configMaps.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			fail("create %s: %v", name, err)
		}
	}
	create("clientgo-watched")
	for out.WatchEvent == "" {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				fail("watch closed before the event")
			}
			if cm, isCM := ev.Object.(*corev1.ConfigMap); isCM && ev.Type == watch.Added && cm.Name == "clientgo-watched" {
				out.WatchEvent = string(ev.Type) + " " + cm.Name
			}
		case <-ctx.Done():
			fail("no watch event: %v", ctx.Err())
		}
	}
	w.Stop()

	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace))
	informer := factory.Core().V1().ConfigMaps().Informer()
	added := make(chan string, 16)
	_, err = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if cm, ok := obj.(*corev1.ConfigMap); ok {
				added <- cm.Name
			}
		},
	})
	if err != nil {
		fail("informer handler: %v", err)
	}
	factory.Start(ctx.Done())
	out.InformerSynced = cache.WaitForCacheSync(ctx.Done(), informer.HasSynced)
	if !out.InformerSynced {
		fail("informer did not sync")
	}
	create("clientgo-informed")
	for out.InformerAdded == "" {
		select {
		case name := <-added:
			if name == "clientgo-informed" {
				out.InformerAdded = name
			}
		case <-ctx.Done():
			fail("informer saw no add: %v", ctx.Err())
		}
	}
	cancel()
	factory.Shutdown()

	seen.mu.Lock()
	out.Protocols = seen.seen
	seen.mu.Unlock()
	out.Connections = dials.Load()
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("output: %v", err)
	}
}

// The node side of the stand-in: it registers its Node (Ready, with room for
// pods, its kubelet port as the daemon endpoint), renews the node Lease with
// the kubelet's own lease controller so the node lifecycle controller never
// marks it unreachable, reports every pod bound to it Running, and finishes a
// deleted pod's graceful deletion as a kubelet does once its containers stop.
// It authenticates as system:node:<name>, so the Node authorizer and the
// NodeRestriction admission plugin hold it to what a real kubelet may do.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/component-base/version"
	"k8s.io/component-helpers/apimachinery/lease"
	"k8s.io/utils/clock"
)

const (
	// The kubelet's defaults: a 40s lease renewed every quarter of it.
	leaseDurationSeconds = 40
	leaseRenewInterval   = 10 * time.Second
	// How often the Ready condition's heartbeat is refreshed (the kubelet's nodeStatusReportFrequency).
	statusReportInterval = 5 * time.Minute
	image                = "tether.dev/standin:latest"
)

type node struct {
	client  kubernetes.Interface
	name    string
	port    int
	logRoot string
	queue   workqueue.TypedRateLimitingInterface[string]
	pods    cache.Indexer
}

func newNode(kubeconfig, name string, port int, logRoot string) (*node, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "kubelet-standin/" + version.Get().GitVersion
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &node{
		client:  client,
		name:    name,
		port:    port,
		logRoot: logRoot,
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
	}, nil
}

// run registers the Node, retrying each second until that succeeds, then
// refreshes its status as often as the kubelet reports an unchanged one.
func (n *node) run(ctx context.Context) {
	for {
		delay := statusReportInterval
		if err := n.register(ctx); err != nil {
			log.Printf("registering node %s: %v", n.name, err)
			delay = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

func (n *node) status(now metav1.Time) corev1.NodeStatus {
	quantity := resource.MustParse
	resources := corev1.ResourceList{
		corev1.ResourceCPU:              quantity("8"),
		corev1.ResourceMemory:           quantity("16Gi"),
		corev1.ResourceEphemeralStorage: quantity("100Gi"),
		corev1.ResourcePods:             quantity("110"),
	}
	condition := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, message string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: message, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.NodeStatus{
		Capacity:    resources,
		Allocatable: resources,
		Conditions: []corev1.NodeCondition{
			condition(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet stand-in"),
			condition(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet stand-in"),
			condition(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet stand-in"),
			condition(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet stand-in is posting ready status"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: n.name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(n.port)}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:          version.Get().GitVersion,
			OperatingSystem:         runtime.GOOS,
			Architecture:            runtime.GOARCH,
			ContainerRuntimeVersion: "standin://" + version.Get().GitVersion,
		},
	}
}

// register creates the Node or, if it exists, refreshes its status (and so the heartbeat).
func (n *node) register(ctx context.Context) error {
	now := metav1.Now()
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: n.name,
			Labels: map[string]string{
				corev1.LabelHostname:   n.name,
				corev1.LabelOSStable:   runtime.GOOS,
				corev1.LabelArchStable: runtime.GOARCH,
			},
		},
		Status: n.status(now),
	}
	_, err := n.client.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err == nil || !apierrors.IsAlreadyExists(err) {
		return err
	}
	existing, err := n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	existing.Status = n.status(now)
	_, err = n.client.CoreV1().Nodes().UpdateStatus(ctx, existing, metav1.UpdateOptions{})
	return err
}

// renewLease runs the kubelet's node lease controller; the Lease is owned by the Node, as the kubelet's is.
func (n *node) renewLease(ctx context.Context) {
	owner := func(l *coordinationv1.Lease) error {
		if len(l.OwnerReferences) > 0 {
			return nil
		}
		obj, err := n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.name, UID: obj.UID}}
		return nil
	}
	lease.NewController(clock.RealClock{}, n.client, n.name, leaseDurationSeconds, nil,
		leaseRenewInterval, n.name, corev1.NamespaceNodeLease, owner).Run(ctx)
}

// syncPods watches the pods bound to this node and works the queue of those that need a status or a final delete.
func (n *node) syncPods(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(n.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", n.name).String()
		}))
	informer := factory.Core().V1().Pods().Informer()
	n.pods = informer.GetIndexer()
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			n.queue.Add(key)
		}
	}
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		n.queue.ShutDown()
	}()
	for {
		key, quit := n.queue.Get()
		if quit {
			return
		}
		if err := n.syncPod(ctx, key); err != nil {
			log.Printf("pod %s: %v", key, err)
			n.queue.AddRateLimited(key)
		} else {
			n.queue.Forget(key)
		}
		n.queue.Done(key)
	}
}

func (n *node) syncPod(ctx context.Context, key string) error {
	obj, exists, err := n.pods.GetByKey(key)
	if err != nil || !exists {
		return err
	}
	pod := obj.(*corev1.Pod)
	pods := n.client.CoreV1().Pods(pod.Namespace)
	if pod.DeletionTimestamp != nil {
		// The containers are "stopped" at once; this is the kubelet's final, immediate delete.
		err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64),
			Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if pod.Status.Phase != corev1.PodPending && pod.Status.Phase != "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(n.logRoot, pod.Namespace, pod.Name), 0o755); err != nil {
		return err
	}
	running := pod.DeepCopy()
	running.Status = runningStatus(pod, metav1.Now())
	_, err = pods.UpdateStatus(ctx, running, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reporting Running: %w", err)
	}
	return nil
}

// runningStatus is the status a kubelet reports once every container has started and passed readiness.
func runningStatus(pod *corev1.Pod, now metav1.Time) corev1.PodStatus {
	s := pod.Status
	s.Phase = corev1.PodRunning
	s.HostIP, s.HostIPs = "127.0.0.1", []corev1.HostIP{{IP: "127.0.0.1"}}
	s.PodIP, s.PodIPs = "127.0.0.1", []corev1.PodIP{{IP: "127.0.0.1"}}
	s.StartTime = &now
	kept := []corev1.PodCondition{}
	for _, c := range s.Conditions {
		if c.Type == corev1.PodScheduled {
			kept = append(kept, c)
		}
	}
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		kept = append(kept, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	s.Conditions = kept
	containerID := func(name string) string { return fmt.Sprintf("standin://%s/%s", pod.UID, name) }
	s.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		s.InitContainerStatuses = append(s.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: image, ContainerID: containerID(c.Name), Ready: true,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				Reason: "Completed", StartedAt: now, FinishedAt: now, ContainerID: containerID(c.Name),
			}},
		})
	}
	s.ContainerStatuses = nil
	started := true
	for _, c := range pod.Spec.Containers {
		s.ContainerStatuses = append(s.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: image, ContainerID: containerID(c.Name),
			Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return s
}

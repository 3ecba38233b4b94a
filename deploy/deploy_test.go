// Package deploy holds the Kubernetes manifests; this test reads every one
// with the real Kubernetes API types (unknown fields fail) and checks the
// invariants the README promises.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// kustomization is kustomize's file, as much of it as these manifests use.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels,omitempty"`
	Resources []string `json:"resources"`
	Patches   []struct {
		Path string `json:"path"`
	} `json:"patches,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images,omitempty"`
}

// scaledObject is KEDA's keda.sh/v1alpha1 ScaledObject (the fields KEDA documents).
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			Name       string `json:"name"`
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// strict decodes YAML into out, failing on unknown fields and duplicate keys.
func strict(t *testing.T, path string, data []byte, out any) {
	t.Helper()
	js, err := yaml.YAMLToJSONStrict(data)
	require.NoError(t, err, path)
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(out), "%s does not match its Kubernetes type", path)
}

type manifests struct {
	deployment appsv1.Deployment
	configMap  corev1.ConfigMap
	objects    map[string]any // by kind
}

// load reads every YAML file under deploy/ into its type.
func load(t *testing.T) manifests {
	m := manifests{objects: map[string]any{}}
	files, err := filepath.Glob("*/*.yaml")
	require.NoError(t, err)
	more, _ := filepath.Glob("*/*/*.yaml")
	files = append(files, more...)
	require.NotEmpty(t, files)
	for _, path := range files {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		var head struct {
			Kind  string `json:"kind"`
			Patch string `json:"$patch"`
		}
		require.NoError(t, yaml.Unmarshal(data, &head), path)
		if head.Patch != "" {
			require.Equal(t, "delete", head.Patch, path)
			data = bytes.Replace(data, []byte("$patch: delete\n"), nil, 1)
		}
		isPatch := strings.Contains(path, "-patch") || head.Patch != ""
		var obj any
		switch head.Kind {
		case "Kustomization":
			obj = &kustomization{}
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "ConfigMap":
			obj = &corev1.ConfigMap{}
		case "Secret":
			obj = &corev1.Secret{}
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		case "NetworkPolicy":
			obj = &networkingv1.NetworkPolicy{}
		case "HorizontalPodAutoscaler":
			obj = &autoscalingv2.HorizontalPodAutoscaler{}
		case "ScaledObject":
			obj = &scaledObject{}
		default:
			t.Fatalf("%s: unknown kind %q", path, head.Kind)
		}
		strict(t, path, data, obj)
		if isPatch {
			continue
		}
		if strings.HasPrefix(path, "base/") {
			switch o := obj.(type) {
			case *appsv1.Deployment:
				m.deployment = *o
			case *corev1.ConfigMap:
				m.configMap = *o
			}
		}
		m.objects[path] = obj
	}
	return m
}

func TestEveryManifestMatchesItsType(t *testing.T) {
	load(t)
}

func TestKustomizationsNameFilesThatExist(t *testing.T) {
	files, _ := filepath.Glob("*/kustomization.yaml")
	more, _ := filepath.Glob("overlays/*/kustomization.yaml")
	for _, path := range append(files, more...) {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		var k kustomization
		strict(t, path, data, &k)
		require.Equal(t, "kustomize.config.k8s.io/v1beta1", k.APIVersion)
		dir := filepath.Dir(path)
		for _, r := range k.Resources {
			_, err := os.Stat(filepath.Join(dir, r))
			require.NoError(t, err, "%s names %s", path, r)
		}
		for _, p := range k.Patches {
			_, err := os.Stat(filepath.Join(dir, p.Path))
			require.NoError(t, err, "%s names %s", path, p.Path)
		}
	}
	var prod kustomization
	data, _ := os.ReadFile("overlays/production/kustomization.yaml")
	strict(t, "production", data, &prod)
	require.NotContains(t, prod.Resources, "../../base/secret.example.yaml", "production never applies the example secret")
}

func TestTheWorkerPodIsLockedDown(t *testing.T) {
	d := load(t).deployment
	pod := d.Spec.Template.Spec
	// Root in the pod only inside a user namespace of its own.
	require.NotNil(t, pod.HostUsers)
	require.False(t, *pod.HostUsers, "hostUsers: false")
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.SecurityContext.SeccompProfile.Type)
	require.False(t, *pod.AutomountServiceAccountToken)
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	sc := c.SecurityContext
	require.True(t, *sc.ReadOnlyRootFilesystem)
	require.False(t, *sc.AllowPrivilegeEscalation)
	require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	require.ElementsMatch(t, []corev1.Capability{"SETUID", "SETGID", "CHOWN", "FOWNER", "DAC_OVERRIDE", "KILL"}, sc.Capabilities.Add,
		"exactly what the uid sandbox needs")
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		require.False(t, req.IsZero(), "request %s", r)
		require.False(t, lim.IsZero(), "limit %s", r)
	}
	// A read-only root needs writable mounts for the workspaces, the cache and /tmp.
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	for _, path := range []string{"/work", "/tmp"} {
		require.Contains(t, mounts, path)
	}
	for _, v := range pod.Volumes {
		require.True(t, v.EmptyDir != nil || v.PersistentVolumeClaim != nil || v.Ephemeral != nil, "volume %s", v.Name)
	}
	require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	// Secrets come from a Secret, never the ConfigMap.
	secretEnv := map[string]bool{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			secretEnv[e.Name] = true
		}
	}
	require.True(t, secretEnv["POSTHOG_PERSONAL_API_KEY"])
	require.True(t, secretEnv["TASKWORKER_GITHUB_TOKEN"])
}

func TestTheWorkerRunsAgentsInTheUIDSandbox(t *testing.T) {
	m := load(t)
	require.Equal(t, "uid", m.configMap.Data["TASKWORKER_SANDBOX"])
	lo, hi, ok := strings.Cut(m.configMap.Data["TASKWORKER_SANDBOX_UIDS"], "-")
	require.True(t, ok)
	first, err1 := strconv.Atoi(lo)
	last, err2 := strconv.Atoi(hi)
	require.NoError(t, errors.Join(err1, err2))
	// The pod's user namespace maps 0-65535; the worker is 0.
	require.True(t, first > 0 && last < 65536 && first <= last, "uid range %d-%d", first, last)
	runs, err := strconv.Atoi(m.configMap.Data["TASKWORKER_MAX_CONCURRENT_RUNS"])
	require.NoError(t, err)
	require.GreaterOrEqual(t, last-first+1, runs)
}

func TestTheGracePeriodCoversTheDrain(t *testing.T) {
	m := load(t)
	drain, err := time.ParseDuration(m.configMap.Data["TASKWORKER_DRAIN_TIMEOUT"])
	require.NoError(t, err)
	grace := time.Duration(*m.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	// The worker exits by its drain timeout (the stopped steps' flushes are
	// inside it); then a margin.
	require.GreaterOrEqual(t, grace, drain+60*time.Second, "terminationGracePeriodSeconds %s vs drain %s", grace, drain)
	require.Zero(t, m.deployment.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue(), "a rollout never drops capacity")
}

func TestConfigMapHoldsNoSecrets(t *testing.T) {
	m := load(t)
	for key := range m.configMap.Data {
		for _, suffix := range []string{"_KEY", "_TOKEN", "_SECRET", "_PASSWORD"} {
			require.False(t, strings.HasSuffix(key, suffix), "%s belongs in the Secret", key)
		}
	}
}

func TestPoliciesSelectTheWorkerPods(t *testing.T) {
	m := load(t)
	labels := m.deployment.Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	pdb := m.objects["base/poddisruptionbudget.yaml"].(*policyv1.PodDisruptionBudget)
	require.True(t, matches(pdb.Spec.Selector.MatchLabels))
	np := m.objects["base/networkpolicy.yaml"].(*networkingv1.NetworkPolicy)
	require.True(t, matches(np.Spec.PodSelector.MatchLabels))
	ports := map[int32]bool{}
	for _, rule := range np.Spec.Egress {
		for _, p := range rule.Ports {
			ports[p.Port.IntVal] = true
		}
	}
	for _, port := range []int32{53, 443, 7233} {
		require.True(t, ports[port], "egress to port %d (DNS, PostHog/GitHub/model APIs, Temporal)", port)
	}
	hpa := m.objects["base/hpa.yaml"].(*autoscalingv2.HorizontalPodAutoscaler)
	require.Equal(t, m.deployment.Name, hpa.Spec.ScaleTargetRef.Name)
}

func TestProductionScalesOnTheTaskQueueBacklog(t *testing.T) {
	m := load(t)
	so := m.objects["overlays/production/scaledobject.yaml"].(*scaledObject)
	require.Equal(t, "keda.sh/v1alpha1", so.APIVersion)
	require.Equal(t, m.deployment.Name, so.Spec.ScaleTargetRef.Name)
	require.Len(t, so.Spec.Triggers, 1)
	trig := so.Spec.Triggers[0]
	require.Equal(t, "temporal", trig.Type)
	require.Equal(t, m.configMap.Data["TEMPORAL_TASK_QUEUE"], trig.Metadata["taskQueue"])
	require.Equal(t, m.configMap.Data["TEMPORAL_ADDRESS"], trig.Metadata["endpoint"])
	require.Equal(t, m.configMap.Data["TEMPORAL_NAMESPACE"], trig.Metadata["namespace"])
	require.NotEmpty(t, trig.Metadata["targetQueueSize"])
}

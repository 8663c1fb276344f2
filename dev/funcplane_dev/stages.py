"""kwok Stages: how simulated nodes and pods move through their lifecycle.

Pods start Running but unready, then turn Ready, like a real container whose readiness probe
passes. Tests steer single pods through annotations on the pod template:

- ``sim.funcplane.dev/ready: "false"``: the pod runs but never becomes Ready.
- ``sim.funcplane.dev/ready-after: "10s"``: Ready only after that delay (Go duration syntax).
- ``sim.funcplane.dev/fail: "true"``: the container crash-loops; the pod is never Ready.
"""

from __future__ import annotations

ANNOTATION_READY = "sim.funcplane.dev/ready"
ANNOTATION_READY_AFTER = "sim.funcplane.dev/ready-after"
ANNOTATION_FAIL = "sim.funcplane.dev/fail"
NODE_MARKER = "kwok.x-k8s.io/node"
# Held by the pod runner on a pod whose host process it runs: a deleted pod stays Terminating (and
# keeps its IP) until the host has stopped, as a kubelet keeps it until its containers have.
RUNNER_FINALIZER = "sim.funcplane.dev/local-process"


def _annotation(key: str) -> str:
    return f'.metadata.annotations["{key}"]'


_NODE_INITIALIZE = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: funcplane-node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ["True"]
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Ready, status: "True", reason: KubeletReady, message: simulated node is ready, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      - {type: MemoryPressure, status: "False", reason: KubeletHasSufficientMemory, message: simulated, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      - {type: DiskPressure, status: "False", reason: KubeletHasNoDiskPressure, message: simulated, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      - {type: PIDPressure, status: "False", reason: KubeletHasSufficientPID, message: simulated, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      - {type: NetworkUnavailable, status: "False", reason: RouteCreated, message: simulated, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      addresses:
      - {type: InternalIP, address: {{ NodeIP | Quote }}}
      - {type: Hostname, address: {{ NodeName | Quote }}}
      allocatable:
      {{ YAML .status.allocatable 1 }}
      capacity:
      {{ YAML .status.capacity 1 }}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
        containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
        kernelVersion: simulated
        osImage: simulated
        machineID: ""
        systemUUID: ""
        bootID: ""
      phase: Running
"""

# The pod's addresses, assigned once by the stage that starts the pod: kwok merges status patches,
# and asking again would allocate a second IP.
_POD_ADDRESSES = """\
      {{ with NodeIPsWith .spec.nodeName }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
"""


def _pod_stage(name: str, selector: str, status: str, ready: bool, container_state: str,
               delay: str = "", starts_pod: bool = True) -> str:
    ready_text = "true" if ready else "false"
    condition = '"True"' if ready else '"False"'
    return f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: {name}
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
{selector}{delay}  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      phase: {status}
      startTime: {{{{ or .status.startTime $now | Quote }}}}
      conditions:
      - {{type: PodScheduled, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
      - {{type: Initialized, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
      - {{type: ContainersReady, status: {condition}, lastTransitionTime: {{{{ $now | Quote }}}}}}
      - {{type: Ready, status: {condition}, lastTransitionTime: {{{{ $now | Quote }}}}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - name: {{{{ .name | Quote }}}}
        image: {{{{ .image | Quote }}}}
        imageID: ""
        ready: {ready_text}
        started: true
{container_state}      {{{{ end }}}}
      initContainerStatuses:
      {{{{ range .spec.initContainers }}}}
      - name: {{{{ .name | Quote }}}}
        image: {{{{ .image | Quote }}}}
        imageID: ""
        ready: true
        restartCount: 0
        state:
          terminated: {{exitCode: 0, reason: Completed, startedAt: {{{{ $now | Quote }}}}, finishedAt: {{{{ $now | Quote }}}}}}
      {{{{ end }}}}
{_POD_ADDRESSES if starts_pod else ""}"""


def _expr(key: str, operator: str, values: list[str] | None = None) -> str:
    text = f"    - key: '{key}'\n      operator: {operator}\n"
    if values is not None:
        text += f"      values: [{', '.join(repr(v) for v in values)}]\n"
    return text


_RUNNING = "        restartCount: 0\n        state:\n          running: {startedAt: {{ $now | Quote }}}\n"
_CRASHING = ("        restartCount: 3\n        state:\n          waiting: {reason: CrashLoopBackOff, "
             "message: simulated container failure}\n        lastState:\n          terminated: "
             "{exitCode: 1, reason: Error, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}\n")
_PENDING = _expr(".status.phase", "NotIn", ["Running", "Succeeded", "Failed"])
_NOT_READY = _expr('.status.conditions.[] | select( .type == "Ready" ) | .status', "NotIn", ["True"])

POD_STAGES = [
    # A new pod starts its container; it is not Ready yet.
    _pod_stage("funcplane-pod-start",
               _PENDING + _expr(_annotation(ANNOTATION_FAIL), "DoesNotExist"),
               "Running", ready=False, container_state=_RUNNING),
    # A running pod passes its readiness probe, after the optional delay.
    _pod_stage("funcplane-pod-ready",
               _expr(".status.phase", "In", ["Running"]) + _NOT_READY
               + _expr(_annotation(ANNOTATION_READY), "NotIn", ["false"])
               + _expr(_annotation(ANNOTATION_FAIL), "DoesNotExist"),
               "Running", ready=True, container_state=_RUNNING, starts_pod=False,
               delay=f"  delay:\n    durationMilliseconds: 0\n    durationFrom:\n"
                     f"      expressionFrom: '{_annotation(ANNOTATION_READY_AFTER)}'\n"),
    # A pod marked to fail crash-loops.
    _pod_stage("funcplane-pod-fail",
               _PENDING + _expr(_annotation(ANNOTATION_FAIL), "Exists"),
               "Running", ready=False, container_state=_CRASHING),
]

_POD_DELETE = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: funcplane-pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: Exists
    - key: '.metadata.finalizers[]? | select(. == "{RUNNER_FINALIZER}")'
      operator: DoesNotExist
  next:
    finalizers:
      empty: true
    delete: true
"""


def stages_yaml() -> str:
    return "\n---\n".join([_NODE_INITIALIZE, *POD_STAGES, _POD_DELETE])

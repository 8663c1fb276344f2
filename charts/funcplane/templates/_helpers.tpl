{{- define "funcplane.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "funcplane.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "funcplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "funcplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "funcplane.labels" -}}
{{ include "funcplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "funcplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "funcplane.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces a namespace-scoped operator watches (default: the release namespace). */}}
{{- define "funcplane.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- join "," .Values.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* What the reconcilers read and write in each watched namespace. */}}
{{- define "funcplane.operatorRules" -}}
- apiGroups: ["funcplane.io"]
  resources: ["functionapps", "slots", "workerconfigs"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["funcplane.io"]
  resources: ["functionapps/status", "slots/status", "workerconfigs/status"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: ["funcplane.io"]
  resources: ["functionapps/finalizers", "slots/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "secrets", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Pods: the swap's warm-up and the scaler read them, a not-ready instance's pods say why (a missing
# Secret, an image, a probe) in the app's status; the scaler marks scale-in victims
# (controller.kubernetes.io/pod-deletion-cost).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "patch"]
# Each app's hosts get a Role to hold their slots' timer Leases (get and update limited to those
# names); RBAC lets the operator grant only what it holds itself, hence the lease verbs here.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create", "get", "update"]
{{- end -}}

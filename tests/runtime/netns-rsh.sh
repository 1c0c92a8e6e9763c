#!/bin/sh
# rsh agent for Open MPI that "logs in" to a host by entering its network namespace on this machine:
#   mpirun --mca plm_rsh_agent /path/netns-rsh.sh ...     (Open MPI calls: netns-rsh.sh HOST COMMAND...)
# LPURT_NETNS_MAP maps host names to namespaces, e.g. "10.213.7.1=lpurt-2h-1 10.213.7.2=lpurt-2h-2".
# A host that is not in the map is refused (exit 255, as ssh does), so nothing is ever started elsewhere.
# Used by tests/runtime/two_hosts.sh.
host=$1
shift
ns=""
for m in ${LPURT_NETNS_MAP:-}; do
  [ "${m%%=*}" = "$host" ] && ns=${m#*=}
done
if [ -z "$ns" ]; then
  echo "netns-rsh: host '$host' is not in LPURT_NETNS_MAP ('${LPURT_NETNS_MAP:-}')" >&2
  exit 255
fi
exec ip netns exec "$ns" sh -c "$*"

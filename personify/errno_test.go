package personify

import "syscall"

const syscallENOSPC = syscall.ENOSPC

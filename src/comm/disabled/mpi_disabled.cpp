// Built instead of src/comm/mpi/ when TANDEM_WITH_MPI is OFF.
#include "tandem/comm/backend.h"
#include "tandem/core/error.h"

namespace tandem {

std::shared_ptr<Communicator> make_mpi_communicator(const BackendOptions&) {
  throw NotSupported(
      "the MPI backend is not in this build; reconfigure with -DTANDEM_WITH_MPI=ON (needs "
      "libopenmpi-dev)");
}

bool mpi_available() { return false; }

}  // namespace tandem

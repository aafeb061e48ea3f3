# transform.py SRC.cu OUT.cpp: rewrites a kernel file for the host simulator (see run.sh): dynamic shared
# memory comes from the simulator, and every kernel<<<grid, block, smem, stream>>>(args) launch becomes
# sim::launch(kernel, grid, block, smem, stream, args).
import re
import sys

src = open(sys.argv[1]).read()
src = re.sub(r'extern __shared__ (\w+) (\w+)\[\];', r'\1* \2 = reinterpret_cast<\1*>(::sim::smem);', src)
src = re.sub(r'([A-Za-z_]\w*(?:<\w+>)?)<<<(.*?)>>>\(',
             lambda m: 'sim::launch(%s, %s, ' % (m.group(1), m.group(2)), src, flags=re.S)
if '__shared__' in src:  # a static __shared__ array would silently become one copy per simulated thread
    sys.exit('transform.py: %s declares static __shared__ memory, which the simulator does not model' % sys.argv[1])
if '<<<' in src:
    sys.exit('transform.py: %s has a launch the rewrite did not match' % sys.argv[1])
open(sys.argv[2], 'w').write(src)

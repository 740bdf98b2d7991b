// The sandbox (pause) image of the optional real node; standard library only.
module hubondemand.local/devcluster/images/pause

go 1.26.0

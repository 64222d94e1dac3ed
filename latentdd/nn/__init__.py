"""The networks the distillers and the evaluator share.

- `convnet`: ConvNet-D and the registry of student architectures (`MODELS`, `build_model`);
- `students`: the other students (ResNets, VGG-11, AlexNet) the registry names;
- `dsa`: differentiable siamese augmentation (`DiffAugment`, `DSAConfig`);
- `factorization`: factor x factor tiles per stored image (`tile`, `untile`, `tile_set`);
- `compile`: torch.compile with a fall back to eager (`CompileStatus`, `CompiledModel`).

Nothing here imports the stages (`distill`, `evaluate`, `render`, `vae`) or the pipelines.
"""

// Placeholder: the rollout page is being written.
import { start } from './layout.js';

await start('rollout');
